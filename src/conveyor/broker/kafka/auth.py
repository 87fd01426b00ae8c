"""ACL checks for Kafka requests: the same decision (``protocol/security.authorize``) on the
same security state as HTTP's middleware (``transport/auth.py``), including its catch-up:
a denial is checked again against a newer state fetched from the coordinator, so a rule
created a moment ago works before the next heartbeat brings it.

Transactional ids (Kafka's TRANSACTIONAL_ID resource) are checked here for every API that
names one (:func:`transactional_refusal`): ``produce`` (Kafka's WRITE) for
InitProducerId, Produce of transactional batches, AddPartitionsToTxn, AddOffsetsToTxn,
EndTxn and TxnOffsetCommit; ``describe`` (which ``produce`` implies) for FindCoordinator,
DescribeTransactions and ListTransactions."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.protocol.kafka.errors import KafkaError
from conveyor.protocol.security import authorize
from conveyor.transport.auth import SecuritySource


@dataclass(frozen=True, slots=True)
class Authorizer:
    source: SecuritySource
    enabled: bool

    async def allowed(self, principal: str | None, operation: str, kind: str, name: str) -> bool:
        if not self.enabled:
            return True
        if principal is None:
            return False
        snapshot = self.source.snapshot
        if snapshot is not None and authorize(snapshot.acls, principal, operation, kind, name):
            return True
        if not await self.source.catch_up():
            return False
        snapshot = self.source.snapshot
        return snapshot is not None and authorize(snapshot.acls, principal, operation, kind, name)

    def allowed_now(self, principal: str | None, operation: str, kind: str, name: str) -> bool:
        """Without catch-up: for checks that only narrow an answer (auto-creation)."""
        if not self.enabled:
            return True
        snapshot = self.source.snapshot
        return (
            principal is not None
            and snapshot is not None
            and authorize(snapshot.acls, principal, operation, kind, name)
        )


async def transactional_refusal(
    authorizer: Authorizer, principal: str | None, transactional_id: str, operation: str
) -> KafkaError | None:
    """None when ``principal`` may do ``operation`` (``produce`` or ``describe``) with the
    transactional id, else Kafka's TRANSACTIONAL_ID_AUTHORIZATION_FAILED."""
    if await authorizer.allowed(principal, operation, "transactional_id", transactional_id):
        return None
    return KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
