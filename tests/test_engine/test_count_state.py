"""CountState: a count's state as slots and an int64 array (runtime/count_state.py).

It must count exactly like a dict of ints, emit the same records, hand out captures that
later counting cannot change, and refuse restored data that is not counts."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import numpy as np
import pytest
from rewind_engine.runtime.count_state import CountState


def batches(seed: int) -> list[list[Any]]:
    rng = random.Random(seed)
    keys: list[Any] = ["a", 0, (1, "view"), None, "", 2**40]
    return [
        [rng.choice([*keys, f"k{rng.randrange(50)}"]) for _ in range(rng.randrange(0, 40))]
        for _ in range(10)
    ]


@pytest.mark.parametrize("seed", range(20))
def test_counts_and_emits_like_a_dict(seed: int) -> None:
    each, batch = CountState(), CountState()
    reference: Counter[Any] = Counter()
    for keys in batches(seed) * 3:
        expected_each = []
        for k in keys:
            reference[k] += 1
            expected_each.append((k, reference[k]))
        assert each.add_each(keys) == expected_each
        assert batch.add_batch(keys) == [(k, reference[k]) for k in dict.fromkeys(keys)]
    assert each == batch == dict(reference)
    assert list(each) == list(reference)  # first-seen order, as a dict's


def test_a_capture_is_not_changed_by_later_counting() -> None:
    state = CountState()
    state.add_each(["x", "y", "x"])
    keys, size, counts = state.capture()
    state.add_each(["x", "z", "z"])
    assert (keys[:size], counts.tolist()) == (["x", "y"], [2, 1])
    assert keys[size:] == ["z"]  # the live list grew after the capture
    assert state == {"x": 3, "y": 1, "z": 2}


def test_load_in_bulk_and_over_known_keys() -> None:
    state = CountState()
    state.load(["a", "b"], [5, 7])
    state.load(["c"], [1])
    state.load(["a", "d"], [10, 2])  # "a" is known: added up
    assert state == {"a": 15, "b": 7, "c": 1, "d": 2}
    assert state.add_each(["a", "d"]) == [("a", 16), ("d", 3)]


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ([1, 2.5], "a count must be an integer, got float"),
        ([True, 1], "a count must be an integer, got bool"),
        ([2**63, 1], "a count does not fit 64 bits"),
        ([1], "2 keys but 1 counts"),
    ],
)
def test_load_refuses_what_is_not_a_count_and_keeps_the_state(
    counts: list[Any], message: str
) -> None:
    state = CountState()
    state.load(["kept"], [3])
    with pytest.raises(ValueError, match=message):
        state.load(["a", "b"], counts)
    assert state == {"kept": 3}


def test_keys_are_never_removed_and_counts_fit_int64() -> None:
    state = CountState()
    state["a"] = 1
    with pytest.raises(TypeError, match="never removed"):
        del state["a"]
    with pytest.raises(OverflowError):
        state["b"] = 2**63
    assert state == {"a": 1}


def test_load_takes_a_count_column_as_an_int64_array() -> None:
    state = CountState()
    state.load([5, "a"], np.array([2**62, 3], np.int64))
    assert state == {5: 2**62, "a": 3} and all(type(v) is int for v in state.values())
    state.load(["a", "b"], np.array([1, 1], np.int64))  # "a" is known: added up
    assert state == {5: 2**62, "a": 4, "b": 1}
    assert all(type(v) is int for v in state.values())
    with pytest.raises(ValueError, match="a count must be an integer, got float64"):
        state.load(["c"], np.array([1.0]))
    assert state == {5: 2**62, "a": 4, "b": 1}
