"""``python -m traces.capture``: record a MoSKA decode trace (see traces.capture.cli)."""

import sys

from traces.capture.cli import main

raise SystemExit(main(sys.argv[1:]))
