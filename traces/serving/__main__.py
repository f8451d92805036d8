"""``python -m traces.serving``: see traces.serving.cli."""

from traces.serving.cli import main

raise SystemExit(main())
