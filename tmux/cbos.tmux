#!/usr/bin/env bash
# cbos tmux plugin: a key that opens the cbos control room in a popup, #{cbos_status} for
# the status line, and the defaults of cbos's notification options.
#
# Load it with TPM (set -g @plugin ...), or without TPM, at the end of ~/.tmux.conf:
#   run-shell "$(cbos plugin-path)"
# Silent when all goes well; never overrides a key binding the user made. Options are read
# when it runs: set them before it (re-source ~/.tmux.conf after changing one).

CURRENT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Every option and its default, in one place (cbos/notify.py reads the notify ones).
default_option() {
	case "$1" in
	@cbos-key) echo "A" ;; # prefix + A; "none" binds no key
	@cbos-bin) default_bin ;;
	@cbos-popup-width) echo "90%" ;;
	@cbos-popup-height) echo "85%" ;;
	@cbos-notify) echo "on" ;;         # tmux message on attached clients
	@cbos-notify-bell) echo "on" ;;    # a bell on attached clients' terminals
	@cbos-notify-desktop) echo "off" ;; # notify-send, when installed
	esac
}

# The cbos installed with this file when it is the pip-installed copy
# (PREFIX/share/cbos/tmux/cbos.tmux next to PREFIX/bin/cbos), else the one on PATH.
default_bin() {
	local prefix
	case "$CURRENT_DIR" in
	*/share/cbos/tmux)
		prefix="${CURRENT_DIR%/share/cbos/tmux}"
		if [ -x "$prefix/bin/cbos" ]; then
			echo "$prefix/bin/cbos"
			return
		fi
		;;
	esac
	command -v cbos 2>/dev/null || echo "cbos"
}

get_tmux_option() {
	local value
	value="$(tmux show-option -gqv "$1")"
	if [ -n "$value" ]; then
		echo "$value"
	else
		default_option "$1"
	fi
}

# Single-quote a word for the /bin/sh that runs popup and #() commands.
shell_quote() {
	printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# Make text literal in a status-line format: tmux runs strftime (%) and then its own
# format expansion (#) over status-left/right, #() commands included.
format_literal() {
	local text="$1"
	text="${text//'#'/'##'}"
	text="${text//'%'/'%%'}"
	printf '%s' "$text"
}

# tmux reads a command-line argument ending in ";" as a command separator; "\;" is a ";".
tmux_argument() {
	case "$1" in
	*';') printf '%s\\;' "${1%;}" ;;
	*) printf '%s' "$1" ;;
	esac
}

# The key is ours when this plugin bound it (recorded in @cbos_bound_key) and it still
# opens the popup; any other binding is the user's.
bound_by_us() {
	local binding
	[ "$(tmux show-option -gqv @cbos_bound_key)" = "$1" ] || return 1
	binding="$(tmux list-keys -T prefix "$(tmux_argument "$1")" 2>/dev/null)"
	case "$binding" in
	*display-popup*" --popup"*) return 0 ;;
	*) return 1 ;;
	esac
}

key_bound() {
	[ -n "$(tmux list-keys -T prefix "$(tmux_argument "$1")" 2>/dev/null)" ]
}

bind_popup_key() {
	local key bin width height previous
	key="$(get_tmux_option @cbos-key)"
	bin="$(get_tmux_option @cbos-bin)"
	width="$(get_tmux_option @cbos-popup-width)"
	height="$(get_tmux_option @cbos-popup-height)"
	# Re-sourced with another @cbos-key: release the key this plugin bound before.
	previous="$(tmux show-option -gqv @cbos_bound_key)"
	if [ -n "$previous" ] && [ "$previous" != "$key" ] && bound_by_us "$previous"; then
		tmux unbind-key -T prefix "$(tmux_argument "$previous")"
		tmux set-option -gqu @cbos_bound_key
	fi
	[ "$key" != "none" ] || return 0
	if key_bound "$key" && ! bound_by_us "$key"; then
		tmux display-message \
			"$(format_literal "cbos: prefix + $key is taken; set @cbos-key to another key")" \
			2>/dev/null
		return 0
	fi
	# display-popup expands formats only in -d and -T: the command stays literal, and the
	# popup starts in the current pane's directory.
	tmux bind-key -T prefix "$(tmux_argument "$key")" display-popup -E -w "$width" -h "$height" \
		-d "#{pane_current_path}" -T " cbos " "$(shell_quote "$bin") --popup"
	tmux set-option -gq @cbos_bound_key "$key"
}

# Text made literal inside a branch of a #{?...} conditional: also "," and "}", and "%"
# once more (the branch is expanded, strftime included, before its #() runs).
branch_literal() {
	local text
	text="$(format_literal "$1")"
	text="${text//'%'/'%%'}"
	text="${text//','/'#,'}"
	text="${text//'}'/'#}'}"
	printf '%s' "$text"
}

# Replace #{cbos_status} in status-left/right: the line a running cbos (TUI, serve)
# publishes in @cbos_status while its lease (@cbos_status_until, epoch seconds; %s is
# now, from the status line's strftime) holds, else a call to `cbos status`.
interpolate_status() {
	local option value bin command
	bin="$(get_tmux_option @cbos-bin)"
	command="#{?#{e|<:%s,#{@cbos_status_until}},#{@cbos_status},"
	command+="#($(branch_literal "$(shell_quote "$bin")") status)}"
	for option in status-left status-right; do
		value="$(tmux show-option -gqv "$option")"
		case "$value" in
		*'#{cbos_status}'*)
			tmux set-option -gq "$option" "$(tmux_argument "${value//'#{cbos_status}'/"$command"}")"
			;;
		esac
	done
}

# cbos reads the notify options from tmux; declaring them makes `tmux show -g` list them.
declare_notify_options() {
	local name
	for name in @cbos-notify @cbos-notify-bell @cbos-notify-desktop; do
		if [ -z "$(tmux show-option -gqv "$name")" ]; then
			tmux set-option -gq "$name" "$(default_option "$name")"
		fi
	done
}

main() {
	bind_popup_key
	interpolate_status
	declare_notify_options
}
main
