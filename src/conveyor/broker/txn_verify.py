"""KIP-890 part 1 on a partition leader (issue 21, docs/transactions.md, "Hanging transactions"):
no transactional batch is appended to a partition that is not in its producer's ongoing
transaction.

A leader appends a producer's transactional batch at once when that producer already has
a transaction open at the partition (the log's transaction index says so). Otherwise it
first asks the transaction coordinator (``TxnRoute.VERIFY``, Kafka's AddPartitionsToTxn
v4 with ``verify_only``) and refuses the batch with the coordinator's answer
(INVALID_TXN_STATE, PRODUCER_FENCED): appended, a late write of a transaction that already
ended, or a write to a partition the client never added, would open a transaction there
that no marker ever ends (Kafka's hanging transaction: the last stable offset stuck, so
read_committed consumers stuck, for good).

A yes is kept per (partition, producer id) with the producer epoch and the partition's
leader epoch, until a marker of that producer is written there (its transaction ended)
or the leadership changes (the leader epoch no longer matches), as Kafka's
``VerificationGuard``. The broker that forwarded a successful AddPartitionsToTxn learns the
same yes for the partitions it leads without asking (``learn``): with one broker, or a
client whose coordinator broker leads the partition, verification costs no request.

Races, and why they are closed:

* The coordinator's yes can be overtaken by a marker (the transaction aborted while the
  answer travelled): a marker for the key while a verification is in flight voids that
  answer, and the leader asks again (up to ``VERIFY_ATTEMPTS_MAX`` times).
* ``admit`` is called synchronously right before the append (no await between them), so
  no marker can end the transaction between the check and the append.
* ``learn`` from a forwarded AddPartitionsToTxn runs before the client has the answer, so
  before it can send the EndTxn whose markers would end the transaction; a transaction
  ended by the coordinator itself (a timeout, a fencing InitProducerId) is ended at a
  bumped producer epoch, which fences the old epoch's batches at the leader anyway.

Bounded: at most ``ENTRIES_MAX`` answers kept, the oldest dropped first (asked again).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from conveyor.protocol.batch import HEADER_SIZE, TRANSACTIONAL_BIT, parse_header
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError, RetriableError
from conveyor.protocol.replica import ProducerWrite, TopicPartition
from conveyor.protocol.txn import TxnAddPartitionsResponse, TxnPartition, TxnVerifyRequest

log = logging.getLogger(__name__)

ENTRIES_MAX: Final = 100_000
VERIFY_ATTEMPTS_MAX: Final = 3

Verify = Callable[[TxnVerifyRequest], Awaitable[TxnAddPartitionsResponse]]
_Key = tuple[TopicPartition, int]  # (partition, producer id)


def transactional_data(batches: bytes | memoryview) -> bool:
    """Is the (first) batch a transactional one with records (not a marker)? The produce
    path refuses a request with a producer id and more than one batch."""
    if len(batches) < HEADER_SIZE:
        return False
    header = parse_header(batches, 0)
    return bool(header.attributes & TRANSACTIONAL_BIT) and not header.is_control


class TxnVerifier:
    def __init__(self, verify: Verify, entries_max: int = ENTRIES_MAX) -> None:
        self._verify = verify
        self._entries_max = entries_max
        # (partition, producer id) -> (producer epoch, leader epoch) of a yes
        self._verified: dict[_Key, tuple[int, int]] = {}
        self._asking: dict[_Key, int] = {}  # verifications in flight
        self._ended: dict[_Key, int] = {}  # markers written while some were in flight

    def verified(self, tp: TopicPartition, write: ProducerWrite, leader_epoch: int) -> bool:
        return self._verified.get((tp, write.producer_id)) == (write.producer_epoch, leader_epoch)

    def admit(
        self, tp: TopicPartition, write: ProducerWrite, leader_epoch: int, open_here: bool
    ) -> None:
        """Right before the append (no await in between): may this transactional batch
        go in? ``open_here``: the producer has a transaction open at the partition."""
        if not open_here and not self.verified(tp, write, leader_epoch):
            raise InvalidRequestError(
                f"{tp}: partition not in an ongoing transaction of producer "
                f"{write.producer_id} epoch {write.producer_epoch}; nothing was written",
                code=ErrorCode.INVALID_TXN_STATE,
            )

    def learn(
        self, tp: TopicPartition, producer_id: int, producer_epoch: int, leader_epoch: int
    ) -> None:
        """The coordinator said the partition is in this producer's ongoing transaction."""
        key = (tp, producer_id)
        self._verified.pop(key, None)  # re-inserted last: the newest is dropped last
        self._verified[key] = (producer_epoch, leader_epoch)
        if len(self._verified) > self._entries_max:
            del self._verified[next(iter(self._verified))]

    def ended(self, tp: TopicPartition, producer_id: int) -> None:
        """A marker of this producer was written at ``tp``: its transaction there ended."""
        key = (tp, producer_id)
        self._verified.pop(key, None)
        if key in self._asking:
            self._ended[key] = self._ended.get(key, 0) + 1

    async def verify(self, tp: TopicPartition, write: ProducerWrite, leader_epoch: int) -> None:
        """Ask the coordinator; remember its yes; raise its refusal (a typed error)."""
        key = (tp, write.producer_id)
        request = TxnVerifyRequest(
            producer_id=write.producer_id,
            producer_epoch=write.producer_epoch,
            partitions=[TxnPartition(tp.topic, tp.partition)],
        )
        for _ in range(VERIFY_ATTEMPTS_MAX):
            error, overtaken = await self._ask(key, request)
            if error is not None:
                code = ErrorCode.__members__.get(error, ErrorCode.INVALID_TXN_STATE)
                log.info(
                    "%s: transactional batch of producer %d epoch %d refused: %s",
                    tp, write.producer_id, write.producer_epoch, code.name,
                )  # fmt: skip
                raise InvalidRequestError(
                    f"{tp}: producer {write.producer_id} epoch {write.producer_epoch}: "
                    f"{code.default_message}; nothing was written",
                    code=code,
                )
            if not overtaken:
                self.learn(tp, write.producer_id, write.producer_epoch, leader_epoch)
                return
        raise RetriableError(
            f"{tp}: the transaction of producer {write.producer_id} kept ending while it was "
            "verified; nothing was written",
            code=ErrorCode.NOT_ENOUGH_REPLICAS,
        )

    async def _ask(self, key: _Key, request: TxnVerifyRequest) -> tuple[str | None, bool]:
        """The coordinator's answer, and whether a marker overtook it."""
        self._asking[key] = self._asking.get(key, 0) + 1
        before = self._ended.get(key, 0)
        try:
            answer = await self._verify(request)
        except ConveyorError as exc:
            # Kafka's mapping: a produce cannot carry the coordinator's errors to old
            # clients, so an unanswered verification is a retriable NOT_ENOUGH_REPLICAS
            raise RetriableError(
                f"{key[0]}: the transaction coordinator did not answer the verification: "
                f"{exc.message}; nothing was written",
                code=ErrorCode.NOT_ENOUGH_REPLICAS,
            ) from exc
        finally:
            overtaken = self._ended.get(key, 0) != before
            left = self._asking[key] - 1
            if left:
                self._asking[key] = left
            else:
                del self._asking[key]
                self._ended.pop(key, None)
        results = answer.partitions
        error = results[0].error if results else ErrorCode.INVALID_TXN_STATE.name
        return error, overtaken
