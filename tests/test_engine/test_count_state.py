"""CountState: a count's state as slots and an int64 array (runtime/count_state.py).

It must count exactly like a dict of ints, emit the same records, hand out captures that
later counting cannot change, and refuse restored data that is not counts."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import numpy as np
import pytest
from rewind_engine.runtime.count_state import COLD_MIN, CountState, int_hashes


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


# -- a restore leaves the dict of slots to fill in, partition by partition ---------------


def test_int_hashes_in_bulk_equal_pythons_hash() -> None:
    edges = [0, 1, -1, 2, -2, 2**61 - 2, 2**61 - 1, 2**61, -(2**61 - 1), -(2**61), 2**63 - 1]
    rng = random.Random(3)
    keys = [*edges, -(2**63), *(rng.randrange(-(2**63), 2**63) for _ in range(10_000))]
    assert int_hashes(np.array(keys, np.int64)).tolist() == list(map(hash, keys))


def restored(keys: list[Any], counts: list[int] | None = None) -> CountState:
    state = CountState()
    state.load(keys, counts if counts is not None else list(range(1, len(keys) + 1)))
    return state


@pytest.mark.parametrize(
    "make",
    [
        lambda i: i * 7919 - 10**9,
        lambda i: (i, "view" if i % 3 else "click"),
        lambda i: f"user-{i}",
    ],
    ids=["int", "tuple", "str"],
)
def test_a_large_restore_answers_as_a_dict_while_it_fills_in(make: Any) -> None:
    n = COLD_MIN + 1000
    keys = [make(i) for i in range(n)]
    state = restored(keys)
    reference = dict(zip(keys, range(1, n + 1), strict=True))
    assert state._cold is not None  # the dict fills in as keys are touched
    assert len(state) == n and list(state) == keys
    rng = random.Random(5)
    touched = [rng.choice(keys) for _ in range(300)] + [make(n), make(n + 1)]
    for k in touched:
        reference[k] = reference.get(k, 0) + 1
    assert state.add_batch(touched) == [(k, reference[k]) for k in dict.fromkeys(touched)]
    expected_each = []
    for k in touched[:50]:
        reference[k] += 1
        expected_each.append((k, reference[k]))
    assert state.add_each(touched[:50]) == expected_each
    assert make(n + 2) not in state and keys[-1] in state
    state[keys[0]] = 99  # a restored key keeps its slot
    reference[keys[0]] = 99
    assert list(state) == [*keys, make(n), make(n + 1)]
    keys_list, size, counts = state.capture()
    assert dict(zip(keys_list[:size], counts.tolist(), strict=True)) == reference
    assert state == reference
    assert state._cold is None  # comparing touched every key: the dict is whole


def test_a_restored_key_is_found_by_an_equal_key_of_another_type() -> None:
    keys = list(range(COLD_MIN))
    state = restored(keys, [5] * COLD_MIN)
    assert state[1.0] == 5 and True in state  # 1.0 == True == 1, as in a dict
    assert state.add_batch([True, 2.0]) == [(True, 6), (2.0, 6)]
    assert len(state) == COLD_MIN and state[1] == 6


def test_duplicate_keys_in_a_large_restore_are_summed() -> None:
    keys = [*range(COLD_MIN), 7, True]  # True == 1
    state = restored(keys, [1] * len(keys))
    assert len(state) == COLD_MIN and state[7] == 2 and state[1] == 2


def test_a_load_over_a_restore_adds_up() -> None:
    keys = [f"k{i}" for i in range(COLD_MIN)]
    state = restored(keys, [1] * COLD_MIN)
    state.load(["k0", "new"], [10, 3])
    assert state["k0"] == 11 and state["new"] == 3 and len(state) == COLD_MIN + 1
    assert state.add_each(["k1", "new"]) == [("k1", 2), ("new", 4)]
