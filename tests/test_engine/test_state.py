"""Keyed state store: handles, timers, capture -> key groups -> restore."""

from __future__ import annotations

from rewind_engine.keys import KeyGrouper, key_group_of
from rewind_engine.state import KeyedContext, KeyedStateStore, Timers, group_capture


def test_value_map_list_state_per_key() -> None:
    store = KeyedStateStore()
    ctx = KeyedContext(store, lambda: 0)
    ctx.key = "a"
    ctx.value("n", default=0).set(3)
    ctx.map("m").put("x", 1)
    ctx.list("l").add(1)
    ctx.list("l").add(2)
    ctx.key = "b"
    assert ctx.value("n", default=0).get() == 0
    assert ctx.map("m").get("x") is None
    assert ctx.list("l").get() == []
    ctx.key = "a"
    assert ctx.value("n").get() == 3
    assert ctx.map("m").items() == [("x", 1)]
    assert ctx.list("l").get() == [1, 2]
    ctx.map("m").remove("x")
    assert "a" not in store.maps["m"]  # empty maps don't linger


def test_timers_are_unique_and_fire_in_order() -> None:
    t = Timers()
    for ts, key in [(30, "a"), (10, "b"), (10, "b"), (20, 1), (10, "c")]:
        t.register(ts, key)
    assert len(t) == 4
    t.delete(20, 1)
    fired = []
    while (due := t.pop_due(25)) is not None:
        fired.append(due)
    assert sorted(fired) == [(10, "b"), (10, "c")]
    assert t.pop_due(100) == (30, "a")
    assert t.pop_due(100) is None


def test_capture_is_a_copy_and_restores_by_key_group() -> None:
    store = KeyedStateStore()
    ctx = KeyedContext(store, lambda: 0)
    for i in range(50):
        ctx.key = ("post", i)
        ctx.value("count").set(i)
        ctx.map("seen").put(i % 3, True)
        ctx.list("items").add(i)
        ctx.register_event_timer(1000 + i)
    cap = store.capture()
    ctx.key = ("post", 0)
    ctx.value("count").set(999)  # after the capture: must not leak into it
    ctx.list("items").add(7)
    grouper = KeyGrouper(16)
    groups = group_capture(cap, grouper)
    assert set(groups) == {key_group_of(("post", i), 16) for i in range(50)}
    # Restore only half of the key groups, as a subtask of parallelism 2 would.
    restored = KeyedStateStore()
    for kg, data in groups.items():
        if kg < 8:
            restored.restore_group(data)
    mine = [i for i in range(50) if key_group_of(("post", i), 16) < 8]
    assert sorted(k[1] for k in restored.values["count"]) == mine
    for i in mine:
        assert restored.values["count"][("post", i)] == i
        assert restored.lists["items"][("post", i)] == [i]
        assert restored.maps["seen"][("post", i)] == {i % 3: True}
    assert sorted(ts for ts, _ in restored.event_timers.pending) == [1000 + i for i in mine]
