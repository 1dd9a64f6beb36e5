"""`python -m cbos` runs the same entry point as the `cbos` command."""

import sys

from cbos.entry import main

sys.exit(main())
