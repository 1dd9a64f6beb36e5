#!/usr/bin/env bash
# TPM runs the *.tmux files at the root of a plugin; the plugin itself is tmux/cbos.tmux.
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/tmux/cbos.tmux"
