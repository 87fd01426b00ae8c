"""``python -m conveyor.broker``: run a broker."""

from conveyor.broker.cli import main

raise SystemExit(main())
