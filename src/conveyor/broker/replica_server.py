"""The leader's answers to its followers, on the wire: what the core decided, read from
the logs.

A follower's fetch is stepped into the core (fencing, progress, high watermark, ISR, and
the long-poll: ``CoreDriver.replica_fetch`` returns once the core answers); the answer
names, per partition, the offset to read from (up to the log end: followers copy what
consumers cannot see yet) or why not. Here the batches are read within the request's byte
budget as ranges of the segment files, which the replica listener sends without reading
them (``broker/replica_listener.py``). An OffsetsForLeaderEpoch request is
fenced by the core's rule and answered from the leader's epoch cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from conveyor.broker.core import error_body, fencing_problem
from conveyor.broker.driver import CoreDriver
from conveyor.broker.replicas import ReplicaManager
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.messages import (
    Epoch,
    EpochEndRequest,
    EpochEndResponse,
    EpochEndResult,
    ErrorBody,
    Offset,
    ReplicaFetchRequest,
    ReplicaFetchResponse,
    ReplicaFetchResult,
)
from conveyor.protocol.replica import ReplicaRead, TopicPartition
from conveyor.storage import FileRange, PartitionLog


class ReplicaServer:
    """Narrow dependencies: the core's driver (decisions) and the logs (bytes)."""

    def __init__(self, driver: CoreDriver, storage: ReplicaManager) -> None:
        self._driver = driver
        self._storage = storage

    async def fetch(self, request: ReplicaFetchRequest) -> FetchAnswer:
        """The answer's header and, for each result with ``size_bytes``, where its batches
        lie in a segment file (sent from there: ``os.sendfile``). The caller closes the
        answer (every range's ``fd``), sent or not."""
        answer = await self._driver.replica_fetch(request)
        results: list[ReplicaFetchResult] = []
        ranges: list[FileRange] = []
        logs: list[PartitionLog] = []
        budget = max(request.max_bytes, 1)
        try:
            for wanted, read in zip(request.partitions, answer.reads, strict=True):
                if isinstance(read, ErrorBody):
                    results.append(
                        ReplicaFetchResult(
                            topic=wanted.topic, partition=wanted.partition, error=read
                        )
                    )
                    continue
                partition_log = self._storage.get(TopicPartition(read.topic, read.partition))
                limit = min(request.partition_max_bytes, budget)
                result, found = self._locate(read, partition_log, limit)
                results.append(result)
                if found is not None and partition_log is not None:
                    budget -= found.size_bytes
                    ranges.append(found)
                    logs.append(partition_log)
        except BaseException:
            FetchAnswer(ReplicaFetchResponse(partitions=[]), ranges, logs).close()
            raise
        return FetchAnswer(ReplicaFetchResponse(partitions=results), ranges, logs)

    def _locate(
        self, read: ReplicaRead, partition_log: PartitionLog | None, limit: int
    ) -> tuple[ReplicaFetchResult, FileRange | None]:
        if partition_log is None:
            error = ErrorBody(code="NOT_LEADER", message="leadership moved", retriable=True)
            return ReplicaFetchResult(topic=read.topic, partition=read.partition, error=error), None
        try:
            found = None
            if limit > 0:
                found = partition_log.read_range(read.fetch_offset, limit)
        except ConveyorError as exc:
            result = ReplicaFetchResult(
                topic=read.topic,
                partition=read.partition,
                error=error_body(exc),
                log_start_offset=Offset(partition_log.log_start_offset),
                log_end_offset=Offset(partition_log.log_end_offset),
            )
            return result, None
        result = ReplicaFetchResult(
            topic=read.topic,
            partition=read.partition,
            high_watermark=read.high_watermark,
            log_start_offset=Offset(partition_log.log_start_offset),
            log_end_offset=Offset(partition_log.log_end_offset),
            size_bytes=0 if found is None else found.size_bytes,
        )
        return result, found

    def epoch_end(self, request: EpochEndRequest) -> EpochEndResponse:
        """Where each asked epoch ends in this leader's log (KIP-101)."""
        state = self._driver.state
        results: list[EpochEndResult] = []
        for wanted in request.partitions:
            tp = TopicPartition(wanted.topic, wanted.partition)
            problem = fencing_problem(state, request.broker_id, tp, wanted.current_leader_epoch)
            partition_log = self._storage.get(tp)
            if problem is None and partition_log is None:
                problem = ConveyorError(f"{tp} is not hosted here")
            if problem is not None:
                results.append(
                    EpochEndResult(
                        topic=wanted.topic, partition=wanted.partition, error=error_body(problem)
                    )
                )
                continue
            assert partition_log is not None
            epoch, end = partition_log.end_offset_for_epoch(wanted.epoch)
            results.append(
                EpochEndResult(
                    topic=wanted.topic,
                    partition=wanted.partition,
                    epoch=Epoch(epoch),
                    end_offset=Offset(end),
                )
            )
        return EpochEndResponse(partitions=results)


@dataclass(frozen=True, slots=True)
class FetchAnswer:
    """A fetch answer to send: its header, then each range (of ``logs[i]``) in order."""

    response: ReplicaFetchResponse
    ranges: list[FileRange]
    logs: list[PartitionLog]

    def unchanged(self) -> bool:
        """Whether no log was truncated or rewritten since its range was found (then the
        bytes sent are the ones found)."""
        return all(
            log.generation == found.generation
            for log, found in zip(self.logs, self.ranges, strict=True)
        )

    def close(self) -> None:
        for found in self.ranges:
            os.close(found.fd)
