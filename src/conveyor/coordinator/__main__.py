"""``python -m conveyor.coordinator``: run the coordinator (see ``cli.py`` for options)."""

from conveyor.coordinator.cli import main

raise SystemExit(main())
