"""`python -m sim` is `moska-sim`."""

from sim.cli import main

raise SystemExit(main())
