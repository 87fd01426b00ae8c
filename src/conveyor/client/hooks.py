"""What an application plugs into a producer: serializers, a partitioner, a delivery
callback (kafka-python's and confluent-kafka's names and shapes).

* ``key_serializer`` / ``value_serializer``: ``callable(obj) -> bytes | str | None``,
  applied to what ``send`` is given (kafka-python's ``key_serializer``/``value_serializer``);
* ``partitioner``: ``callable(key_bytes, all_partitions, available_partitions) -> int``,
  kafka-python's signature; ``available`` are the partitions with a leader now. Used when
  ``send`` names no partition; the default stays Kafka's murmur2 of the key (sticky
  without a key), in the accumulator's fast path;
* ``on_delivery``: ``callable(error, metadata)``, confluent-kafka's delivery report with
  ``RecordMetadata`` for its message: ``error`` None and the metadata once acknowledged,
  else the error and None. It runs on the producer's I/O thread (keep it short), like
  ``RecordFuture.add_done_callback``.

The producers call these only when one is set or a record carries its own timestamp, so
the plain ``send`` keeps its fast path. Nothing here does I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from conveyor.client.futures import RecordFuture
from conveyor.client.types import BytesLike, RecordMetadata, to_bytes
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError

log = logging.getLogger(__name__)

Serializer: TypeAlias = Callable[[Any], BytesLike | None]
Partitioner: TypeAlias = Callable[[bytes | None, list[int], list[int]], int]
DeliveryCallback: TypeAlias = Callable[[ConveyorError | None, RecordMetadata | None], object]


@dataclass(frozen=True, slots=True)
class SendHooks:
    key_serializer: Serializer | None = None
    value_serializer: Serializer | None = None
    partitioner: Partitioner | None = None
    on_delivery: DeliveryCallback | None = None

    @property
    def any(self) -> bool:
        return any(
            hook is not None
            for hook in (self.key_serializer, self.value_serializer, self.partitioner)
        ) or (self.on_delivery is not None)

    def serialize(self, key: Any, value: Any) -> tuple[bytes | None, bytes | None]:
        """Key and value as bytes (each through its serializer when there is one)."""
        if self.key_serializer is not None:
            key = self.key_serializer(key)
        if self.value_serializer is not None:
            value = self.value_serializer(value)
        return (
            None if key is None else to_bytes(key),
            None if value is None else to_bytes(value),
        )

    def choose_partition(
        self, topic: str, key: bytes | None, count: int, available: Sequence[int]
    ) -> int | None:
        """The partitioner's choice (None without one: the default partitioner decides)."""
        if self.partitioner is None:
            return None
        chosen = self.partitioner(key, list(range(count)), list(available))
        if not isinstance(chosen, int) or isinstance(chosen, bool) or not 0 <= chosen < count:
            raise InvalidRequestError(
                f"the partitioner chose {chosen!r} for {topic}, which has partitions "
                f"0..{count - 1}",
                code=ErrorCode.UNKNOWN_PARTITION,
            )
        return chosen


def report_delivery(future: RecordFuture, callback: DeliveryCallback | None) -> None:
    """Call ``callback(error, metadata)`` once the record is acknowledged or failed."""
    if callback is None:
        return

    def done(finished: RecordFuture) -> None:
        error = finished.exception(0)
        callback(error, None if error is not None else finished.result(0))

    future.add_done_callback(done)
