"""``python -m conveyor.coordinator``: run the coordinator (see ``cli.py`` for options)."""

from conveyor._process import exit_without_last_collection
from conveyor.coordinator.cli import main

exit_without_last_collection(main())
