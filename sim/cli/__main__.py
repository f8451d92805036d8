"""``python -m sim.cli``: the ``moska-sim`` command."""

from sim.cli import main

raise SystemExit(main())
