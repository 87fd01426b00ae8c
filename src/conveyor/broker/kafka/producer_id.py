"""InitProducerId: an idempotent producer's id and epoch from the coordinator (the HTTP
route ``POST /v1/producers/init``'s operation; a known id with its epoch gets the epoch
bumped, as KIP-360). With a transactional id it goes to the transaction coordinator
instead (``transactions.py``: the id's producer, its epoch bumped, older ones fenced).

Authorized as Kafka does: with a transactional id, ``produce`` on it (Kafka's WRITE on the
TRANSACTIONAL_ID), else TRANSACTIONAL_ID_AUTHORIZATION_FAILED; without one,
``idempotent_write`` on the cluster, which ``produce`` on any topic implies (KIP-679),
else CLUSTER_AUTHORIZATION_FAILED."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from conveyor.broker.kafka.auth import Authorizer
from conveyor.broker.kafka.registry import RequestContext
from conveyor.broker.kafka.transactions import TxnOps, init_transactional
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError, kafka_error
from conveyor.protocol.messages import InitProducerIdRequest, InitProducerIdResponse

log = logging.getLogger(__name__)

InitProducerId = Callable[[InitProducerIdRequest], Awaitable[InitProducerIdResponse]]


class InitProducerIdHandler:
    def __init__(
        self, init_producer_id: InitProducerId, txns: TxnOps, authorizer: Authorizer
    ) -> None:
        self._init = init_producer_id
        self._txns = txns
        self._authorizer = authorizer

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        response = SERVED[ApiKey.INIT_PRODUCER_ID].response[ctx.api_version]
        if request.transactional_id is not None:
            error, producer_id, epoch = await init_transactional(
                self._txns, self._authorizer, ctx, request
            )
            if error is not KafkaError.NONE:
                log.info(
                    "InitProducerId for transactional id %r from %s: %s",
                    request.transactional_id,
                    ctx.connection.info.peer,
                    error.name,
                )
            return response(
                throttle_time_ms=0,
                error_code=error,
                producer_id=producer_id,
                producer_epoch=epoch,
            )
        if not await self._authorizer.allowed(
            ctx.principal, "idempotent_write", "cluster", "cluster"
        ):
            return response(
                throttle_time_ms=0,
                error_code=KafkaError.CLUSTER_AUTHORIZATION_FAILED,
                producer_id=-1,
                producer_epoch=-1,
            )
        asked = InitProducerIdRequest(
            producer_id=getattr(request, "producer_id", -1),
            producer_epoch=getattr(request, "producer_epoch", -1),
        )
        try:
            answer = await self._init(asked)
        except ConveyorError as exc:
            return response(
                throttle_time_ms=0,
                error_code=kafka_error(exc.code),
                producer_id=-1,
                producer_epoch=-1,
            )
        return response(
            throttle_time_ms=0,
            error_code=KafkaError.NONE,
            producer_id=answer.producer_id,
            producer_epoch=answer.producer_epoch,
        )
