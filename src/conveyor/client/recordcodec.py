"""Which record codec this client uses: ``CONVEYOR_RECORD_CODEC`` (``auto``, ``compiled``
or ``python``; docs/client.md, "Record codec"), resolved when a producer or consumer is
made, so a changed environment is seen by the next one. The codecs themselves are in
:mod:`conveyor.protocol.fastrecords` (compiled) and :mod:`conveyor.protocol.records`."""

from __future__ import annotations

from collections.abc import Mapping

from conveyor.protocol.fastrecords import RecordCodec, record_codec

__all__ = ["configured_codec"]


def configured_codec(env: Mapping[str, str] | None = None) -> RecordCodec:
    # Imported here, as in seed.py: the settings layer is loaded only by clients that
    # are made, not by every import of the client package.
    from conveyor.settings import catalog, client_settings

    return record_codec(client_settings(env)[catalog.RECORD_CODEC])
