"""``python -m tests.fakeclaude``: the fake claude, the same as the ``claude`` shim runs."""

import sys

from tests.fakeclaude.main import main

sys.exit(main(sys.argv[1:]))
