"""``python -m conveyor.broker``: run a broker."""

from conveyor._process import exit_without_last_collection
from conveyor.broker.cli import main

exit_without_last_collection(main())
