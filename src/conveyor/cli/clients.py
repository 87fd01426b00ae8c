"""``conveyor produce`` and ``conveyor consume``: the console producer (``produce.py``)
and consumer (``consume.py``), registered together."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.cli import consume, produce

if TYPE_CHECKING:
    from conveyor.cli.common import Subparsers


def register(subparsers: Subparsers) -> None:
    produce.register(subparsers)
    consume.register(subparsers)
