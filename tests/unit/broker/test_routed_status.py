"""The HTTP status of a routed produce from its per-record results (docs/api.md)."""

from __future__ import annotations

from conveyor.broker.http import MULTI_STATUS, routed_failure
from conveyor.protocol.messages import ErrorBody, RoutedProduceResponse, RoutedRecordResult

TOO_LARGE = ErrorBody(code="MESSAGE_TOO_LARGE", message="too large", details={"size_bytes": 9})
NOT_LEADER = ErrorBody(code="NOT_LEADER", message="moved", retriable=True)


def answer(*results: RoutedRecordResult) -> RoutedProduceResponse:
    return RoutedProduceResponse(topic="t", results=list(results))


def test_all_written_is_200() -> None:
    assert routed_failure(answer(RoutedRecordResult(0, offset=1))) == 200


def test_all_failed_with_one_code_is_that_error() -> None:
    failed = routed_failure(
        answer(RoutedRecordResult(0, error=TOO_LARGE), RoutedRecordResult(1, error=TOO_LARGE))
    )
    assert isinstance(failed, ErrorBody)
    assert (failed.code, failed.message) == ("MESSAGE_TOO_LARGE", "too large")
    assert failed.details == {"size_bytes": 9, "failed_records": 2}


def test_some_failed_or_different_errors_is_207() -> None:
    mixed = answer(RoutedRecordResult(0, offset=3), RoutedRecordResult(1, error=TOO_LARGE))
    assert routed_failure(mixed) == MULTI_STATUS
    different = answer(
        RoutedRecordResult(0, error=NOT_LEADER), RoutedRecordResult(1, error=TOO_LARGE)
    )
    assert routed_failure(different) == MULTI_STATUS
