"""Committed offsets in ``model.apply``: a persistent map, checked against a plain dict.

Every batch of records must leave the same offsets as the obvious dict model, and the
state it started from must not change (readers keep old snapshots while a batch is being
written: ``writer.py``)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.coordinator.model import (
    ClusterState,
    CommittedOffset,
    GroupRemoved,
    OffsetKey,
    OffsetRecord,
    OffsetRemoved,
    Record,
    TopicRecord,
    TopicRemoved,
    apply,
    check_invariants,
)
from tests.unit.coordinator.helpers import with_brokers, with_topic

TOPICS = ("a", "b")
GROUPS = ("g1", "g2", "g3")

commit = st.builds(
    lambda g, t, p, o: OffsetRecord(CommittedOffset(g, t, p, o, None, 0)),
    st.sampled_from(GROUPS),
    st.sampled_from(TOPICS),
    st.integers(0, 2),
    st.integers(0, 1000),
)
removal = st.one_of(
    st.builds(GroupRemoved, st.sampled_from(GROUPS)),
    st.builds(OffsetRemoved, st.sampled_from(GROUPS), st.sampled_from(TOPICS), st.integers(0, 2)),
    st.builds(TopicRemoved, st.sampled_from(TOPICS)),
)
batches = st.lists(st.lists(st.one_of(commit, commit, commit, removal), max_size=12), max_size=8)


def base_state() -> ClusterState:
    return with_topic(with_topic(with_brokers([1]), "a", partitions=3), "b", partitions=3)


def model_step(model: dict[OffsetKey, CommittedOffset], record: Record) -> None:
    match record:
        case OffsetRecord(offset=offset):
            model[offset.key] = offset
        case OffsetRemoved():
            model.pop(record.key, None)
        case GroupRemoved(group=group):
            for key in [k for k in model if k[0] == group]:
                del model[key]
        case TopicRemoved(name=name):
            for key in [k for k in model if k[1] == name]:
                del model[key]


@settings(max_examples=200)
@given(batches)
def test_offsets_follow_a_dict_model_and_old_states_stay(batches: list[list[Record]]) -> None:
    state = base_state()
    topic_records = {name: TopicRecord(state.topics[name]) for name in TOPICS}
    model: dict[OffsetKey, CommittedOffset] = {}
    for batch in batches:
        # a removed topic comes back before anything else refers to it again
        live = set(state.topics)
        records: list[Record] = []
        for record in batch:
            wanted = record.name if isinstance(record, TopicRemoved) else None
            if isinstance(record, OffsetRecord):
                wanted = record.offset.topic
            if isinstance(record, OffsetRemoved):
                wanted = record.topic
            if wanted is not None and wanted not in live:
                continue
            if isinstance(record, TopicRemoved):
                live.discard(record.name)
            records.append(record)
        before, frozen = state, dict(state.offsets)
        state = apply(state, records)
        for record in records:
            model_step(model, record)
        assert dict(state.offsets) == model
        # held by group: exactly the groups with offsets, each under its own key
        assert set(state.group_offsets) == {k[0] for k in model}
        check_invariants(state)
        assert dict(before.offsets) == frozen  # the old snapshot is untouched
        missing = [topic_records[n] for n in TOPICS if n not in state.topics]
        if missing:
            state = _recreate(state, missing)


def _recreate(state: ClusterState, topics: list[TopicRecord]) -> ClusterState:
    rebuilt = state
    for record in topics:
        rebuilt = with_topic(rebuilt, record.topic.name, partitions=3)
    return rebuilt


def test_a_batch_without_offsets_keeps_the_same_map() -> None:
    state = base_state()
    committed = apply(state, [OffsetRecord(CommittedOffset("g", "a", 0, 5, None, 0))])
    after = apply(committed, [TopicRecord(committed.topics["a"])])
    assert after.group_offsets is committed.group_offsets


def test_the_flat_view_reads_like_a_mapping() -> None:
    state = apply(
        base_state(),
        [
            OffsetRecord(CommittedOffset("g1", "a", 0, 5, "m", 7)),
            OffsetRecord(CommittedOffset("g1", "b", 1, 6, None, 7)),
            OffsetRecord(CommittedOffset("g2", "a", 0, 1, None, 7)),
        ],
    )
    offsets = state.offsets
    assert len(offsets) == 3
    assert offsets[("g1", "a", 0)].metadata == "m"
    assert offsets.get(("g9", "a", 0)) is None and ("g1", "a", 1) not in offsets
    assert sorted(offsets) == [("g1", "a", 0), ("g1", "b", 1), ("g2", "a", 0)]
    assert dict(state.group_offsets["g1"]) == {
        ("a", 0): offsets[("g1", "a", 0)],
        ("b", 1): offsets[("g1", "b", 1)],
    }
    emptied = apply(state, [OffsetRemoved("g2", "a", 0), OffsetRemoved("g9", "a", 0)])
    assert "g2" not in emptied.group_offsets and "g9" not in emptied.group_offsets
