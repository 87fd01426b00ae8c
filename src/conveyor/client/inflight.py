"""The producer's rules for batches in flight, pure (the I/O is ``sender.py``'s): when a
batch may be written behind the batches of its partition already in flight, and what an
error answer means for it. ``tests/unit/client/test_inflight.py`` runs them, with the
accumulator and the broker's own dedup rules, through any order of answers, failures and
leader changes.

Why a batch may be written behind others only on the same connection and under the same
producer identity: a broker appends one connection's requests in the order written, and
checks each batch's sequence against the batches before it, so a batch written too early
is refused (OUT_OF_ORDER_SEQUENCE) and resent after. Except where the broker knows
nothing of the producer (a new leader that never held its batches): it appends whatever
sequence comes first, as Kafka's does. Two ways a batch could get there before the
batch ahead of it and be stored first:

- by another connection than that batch (the route moved): so a batch is written behind
  others only on their connection (Java's producer, too, writes a partition's batches on
  one connection, in order);
- on the same connection, when the batch ahead was refused without being written (say
  NOT_ENOUGH_REPLICAS, which the broker answers before looking at sequences): so a
  partition pipelines only once the broker holds one of the producer's batches, i.e.
  after one was acknowledged under the current producer id and epoch (acks=all: every
  later leader has it). Before that, one batch at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from conveyor.protocol.errors import ErrorCode


class _Sent(Protocol):
    @property
    def sent_on(self) -> object: ...


def may_write(ahead: Sequence[_Sent] | None, note: object, *, producer_known: bool) -> bool:
    """Whether a batch may be written now on the connection and under the producer
    identity that ``note`` names, behind ``ahead`` (its partition's batches in flight,
    each marked with the note it was written under; None: one of the batches ahead was
    put back, so it has to go first). ``producer_known``: a batch of this partition was
    acknowledged under the current identity (or the producer has no sequences to keep).

    >>> class B:
    ...     def __init__(self, note): self.sent_on = note
    >>> one = [B(("gen1", "conn1"))]
    >>> may_write([], ("gen1", "conn1"), producer_known=False)
    True
    >>> may_write(one, ("gen1", "conn1"), producer_known=True)
    True
    >>> may_write(one, ("gen1", "conn1"), producer_known=False)  # the first ack first
    False
    >>> may_write(one, ("gen1", "conn2"), producer_known=True)  # another connection
    False
    >>> may_write(None, ("gen1", "conn1"), producer_known=True)  # one ahead was put back
    False
    """
    if ahead is None or (ahead and not producer_known):
        return False
    return all(other.sent_on == note for other in ahead)


Outcome = Literal["stored", "retry", "fail"]


def after_error(code: ErrorCode, *, retriable: bool, first_unanswered: bool) -> Outcome:
    """What a batch answered with an error becomes.

    - DUPLICATE_SEQUENCE: older than the broker's dedup window, so written before (the
      broker says so only for a sequence below the window it keeps): stored, offsets
      unknown.
    - OUT_OF_ORDER_SEQUENCE while a batch ahead of it is not yet answered (or was put
      back): it came before that batch; it goes again after it (Java's ``canRetry``).
      For the oldest unanswered batch it means the broker lost batches it acknowledged:
      it fails.
    - otherwise retriable errors (the caller counts routing errors as retriable) retry,
      others fail.

    >>> after_error(ErrorCode.OUT_OF_ORDER_SEQUENCE, retriable=False, first_unanswered=False)
    'retry'
    >>> after_error(ErrorCode.OUT_OF_ORDER_SEQUENCE, retriable=False, first_unanswered=True)
    'fail'
    """
    if code is ErrorCode.DUPLICATE_SEQUENCE:
        return "stored"
    if code is ErrorCode.OUT_OF_ORDER_SEQUENCE and not first_unanswered:
        return "retry"
    return "retry" if retriable else "fail"
