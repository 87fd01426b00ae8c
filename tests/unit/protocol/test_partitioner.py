import warnings

from hypothesis import given
from hypothesis import strategies as st

from conveyor.protocol.partitioner import murmur2, partition_for_key

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.partitioner.default import murmur2 as kafka_murmur2


@given(st.binary(max_size=64))
def test_murmur2_matches_kafka_python(data: bytes) -> None:
    assert murmur2(data) & 0xFFFFFFFF == kafka_murmur2(data)


def test_murmur2_is_signed_like_java() -> None:
    # Java's Utils.murmur2 returns a signed int; values from the Java client's test vectors.
    assert murmur2(b"21") == -973932308
    assert murmur2(b"foobar") == -790332482
    assert murmur2(b"a-little-bit-long-string") == -985981536


@given(st.binary(min_size=1, max_size=32), st.integers(min_value=1, max_value=1000))
def test_partition_in_range(key: bytes, count: int) -> None:
    assert 0 <= partition_for_key(key, count) < count
