"""KRaft cluster ids for dev/'s broker and the tests' private brokers: StorageTool takes
an id that starts with "-" for an option, so none may."""

from __future__ import annotations

from dev.plane import components


def test_kafka_cluster_ids_never_look_like_an_option() -> None:
    ids = [components.kafka_cluster_id() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids) and len(set(ids)) == len(ids)
