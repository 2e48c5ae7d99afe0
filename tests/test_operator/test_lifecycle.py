"""The declared lifecycle, edge by edge.

Two directions: every edge of `lifecycle.EDGES` is reached by some observation (a
walk of `decide` over a grid of starting states x spec changes x observations x
elapsed times), and no observation produces a move the table does not declare (`decide`
raises `UndeclaredTransition` for one, and for an operation that does not match the
edge it took; the grid asserts every produced edge is in the table anyway).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from rewind_operator import lifecycle
from rewind_operator.context import Decision
from rewind_operator.decide import decide
from rewind_operator.lifecycle import EDGES, REST, STATES, Edge, On, State, state_of
from rewind_operator.models import Operation
from rewind_operator.vocabulary import Kind, Phase, Stage

from tests.test_operator import appworld
from tests.test_operator.appworld import (
    POLICY,
    Story,
    World,
    make_app,
    running_story,
    sp_obs,
    spec,
)

# --------------------------------------------------------------------------- the table


def test_one_edge_per_state_and_observation() -> None:
    keys = [(e.src, e.on) for e in EDGES]
    assert len(keys) == len(set(keys))


def test_every_state_is_reachable_from_rest_and_can_return_to_it() -> None:
    targets: dict[State, set[State]] = {s: set() for s in STATES}
    for edge in EDGES:
        targets[edge.src].add(edge.dst)

    def closure(start: State, step: Callable[[State], set[State]]) -> set[State]:
        seen, todo = {start}, [start]
        while todo:
            for nxt in step(todo.pop()) - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    assert closure(REST, lambda s: targets[s]) == set(STATES)
    sources = {s: {e.src for e in EDGES if e.dst == s} for s in STATES}
    assert closure(REST, lambda s: sources[s]) == set(STATES), "some state never ends"


def test_states_are_the_operations_of_the_status_model() -> None:
    for state in STATES[1:]:
        assert state.kind is not None and state.stage is not None
        assert state_of(Operation(kind=state.kind, stage=state.stage)) == state
    assert state_of(None) == REST


def test_a_failed_gating_savepoint_only_ever_blocks_with_the_job_running() -> None:
    failed = [e for e in EDGES if e.on == On.SAVEPOINT_FAILED]
    assert {e.src for e in failed} == {lifecycle.UPGRADE_SAVEPOINT, lifecycle.SUSPEND_SAVEPOINT}
    assert all(e.dst.stage == Stage.BLOCKED and e.phase == Phase.RUNNING for e in failed)


def test_undeclared_moves_are_refused() -> None:
    with pytest.raises(lifecycle.UndeclaredTransition, match="no edge from rest on SAVEPOINT"):
        lifecycle.step(REST, On.SAVEPOINT_COMPLETED)
    with pytest.raises(lifecycle.UndeclaredTransition, match="the operation says"):
        lifecycle.check_reached(REST, Operation(kind=Kind.UPGRADE, stage=Stage.SAVEPOINT))


def test_phase_of_keeps_the_phase_where_the_table_says_none() -> None:
    assert lifecycle.phase_of(lifecycle.UPGRADE_DEPLOYING, On.WAITING, Phase.FAILED) == "Failed"
    assert lifecycle.phase_of(REST, On.NOT_READY, Phase.RUNNING) == "Running"
    assert lifecycle.phase_of(lifecycle.UPGRADE_DEPLOYING, On.READY, Phase.FAILED) == "Running"


# --------------------------------------------------------------------------- the grid


def _story(*setup: Callable[[Story], Any]) -> Story:
    return _then(running_story(), *setup)


def _fresh() -> Story:
    return Story()


def _deploying() -> Story:
    story = Story()
    story.step()
    return story


def _change(**overrides: Any) -> Callable[[Story], None]:
    return lambda story: story.change(**overrides)


def _step(**kw: Any) -> Callable[[Story], Any]:
    return lambda story: story.step(**kw)


def _storage_down(story: Story) -> None:
    story.world.storage_down = True


def _suspended() -> Story:
    story = _story(_change(state="suspended"))
    story.settle(3)
    story.world.pods = []
    story.step()
    return story


def _then(story: Story, *steps: Callable[[Story], Any]) -> Story:
    for step in steps:
        step(story)
    return story


def _broken_v3(story: Story) -> None:
    story.world.broken_images.add("v3")


def _incompatible_v4(story: Story) -> None:
    story.world.incompatible_images.add("v4")


CHECKED = {"preflight": {"enabled": True}}


START: dict[str, tuple[State, Callable[[], Story]]] = {
    "never deployed": (REST, _fresh),
    "running": (REST, running_story),
    "running at two workers": (
        REST,
        lambda: running_story(workers=2, parallelism=2, exchange={"bootstrapServers": "k:1"}),
    ),
    "suspended": (REST, _suspended),
    "deploy": (lifecycle.DEPLOY, _deploying),
    "upgrade-preflight": (
        lifecycle.UPGRADE_PREFLIGHT,
        lambda: _story(_change(image="v2", **CHECKED), _step(preflights=False)),
    ),
    "upgrade-preflight-last-state": (
        lifecycle.UPGRADE_PREFLIGHT,
        lambda: _story(
            _change(image="v2", upgradeMode="last-state", **CHECKED), _step(preflights=False)
        ),
    ),
    "upgrade-refused": (
        lifecycle.UPGRADE_REFUSED,
        lambda: _story(_incompatible_v4, _change(image="v4", **CHECKED), _step(), _step()),
    ),
    "upgrade-savepoint": (
        lifecycle.UPGRADE_SAVEPOINT,
        lambda: _story(_change(image="v2"), _step(savepoints=False)),
    ),
    "upgrade-blocked": (
        lifecycle.UPGRADE_BLOCKED,
        lambda: _story(_storage_down, _change(image="v2"), _step(), _step()),
    ),
    "upgrade-deploying": (
        lifecycle.UPGRADE_DEPLOYING,
        lambda: _story(_change(image="v2"), _step(), _step()),
    ),
    "rollback": (
        lifecycle.ROLLBACK,
        lambda: _story(_broken_v3, _change(image="v3"), _step(), _step(), _step()),
    ),
    "suspend-savepoint": (
        lifecycle.SUSPEND_SAVEPOINT,
        lambda: _story(_change(state="suspended"), _step(savepoints=False)),
    ),
    "suspend-blocked": (
        lifecycle.SUSPEND_BLOCKED,
        lambda: _story(_storage_down, _change(state="suspended"), _step(), _step()),
    ),
    "suspend-stopping": (
        lifecycle.SUSPEND_STOPPING,
        lambda: _story(_change(upgradeMode="stateless", state="suspended"), _step()),
    ),
    "resume": (lifecycle.RESUME, lambda: _then(_suspended(), _change(state="running"), _step())),
    "redeploy": (
        lifecycle.REDEPLOY,
        lambda: _story(
            _change(restore={"path": "s3://bucket/apps/pa/savepoints/ns/x/", "redeployNonce": 1}),
            _step(),
        ),
    ),
    # a redeploy that also changes the image can be rolled back to the stable spec
    "redeploy-new-image": (
        lifecycle.REDEPLOY,
        lambda: _story(
            _broken_v3,
            _change(
                image="v3",
                restore={"path": "s3://bucket/apps/pa/savepoints/ns/x/", "redeployNonce": 1},
            ),
            _step(),
        ),
    ),
}

# What the spec says at the moment of the reconcile (on top of the story's own changes).
SPECS: dict[str, Callable[[Story], dict[str, Any] | None]] = {
    "as-is": lambda s: s.spec_data,
    "original": lambda s: spec(),
    "new-image": lambda s: spec(**{**s._overrides, "image": "v9"}),
    "new-image-checked": lambda s: spec(**{**s._overrides, "image": "v9", **CHECKED}),
    "last-state-image": lambda s: spec(
        **{**s._overrides, "image": "v9", "upgradeMode": "last-state"}
    ),
    "suspend": lambda s: spec(**{**s._overrides, "state": "suspended"}),
    "running": lambda s: spec(**{**s._overrides, "state": "running"}),
    "no-rollback": lambda s: spec(
        **{**s._overrides, "rollback": {"enabled": False, "readinessTimeout": "60s"}}
    ),
    "invalid": lambda s: spec(**{**s._overrides, "parallelism": 8, "maxParallelism": 4}),
    "redeploy": lambda s: spec(
        **{**s._overrides, "restore": {"path": "s3://bucket/p/", "redeployNonce": 7}}
    ),
    "restore-missing": lambda s: spec(**{**s._overrides, "restore": {"savepoint": "nope"}}),
    # a rescale to several workers, and one the engine could not run (parallelism too low)
    "workers": lambda s: spec(
        **{**s._overrides, "workers": 2, "parallelism": 2, "exchange": {"bootstrapServers": "k:1"}}
    ),
    "workers-invalid": lambda s: spec(**{**s._overrides, "workers": 3, "parallelism": 2}),
}

OBSERVATIONS: dict[str, Callable[[World], World]] = {
    **appworld.OBSERVATIONS,
    "savepoints-completed": lambda w: replace(
        w,
        savepoints={
            k: replace(v, phase="Completed", path=f"s3://bucket/apps/pa/savepoints/ns/{k}/")
            for k, v in w.savepoints.items()
        },
    ),
    "state-found": lambda w: replace(
        w, savepoints={**w.savepoints, "old": sp_obs("old", "Completed", reason="periodic")}
    ),
}
ELAPSED = {"soon": 5.0, "later": 3600.0}


@functools.cache
def _walk() -> tuple[frozenset[Edge], tuple[str, ...]]:
    """Every edge `decide` takes over the grid, and the grid points where it raised."""
    reached: set[Edge] = set()
    errors: list[str] = []
    for start, build in START.values():
        story = build()
        assert state_of(story.status.operation) == start, (start, story.status.operation)
        for (sname, make_spec), (oname, observe), (tname, seconds) in itertools.product(
            SPECS.items(), OBSERVATIONS.items(), ELAPSED.items()
        ):
            world = observe(replace(story.world))
            now = story.now + timedelta(seconds=seconds)
            for deleting in (False, True):
                app = make_app(make_spec(story), story.status, story.generation + 1, deleting)
                try:
                    decision: Decision = decide(app, world.observed(), now, POLICY)
                except lifecycle.UndeclaredTransition as exc:
                    errors.append(f"{start} + {sname}/{oname}/{tname}: {exc}")
                    continue
                assert decision.transitions, "every reconcile moves along at least one edge"
                assert decision.transitions[0].src == start
                for before, after in itertools.pairwise(decision.transitions):
                    assert before.dst == after.src
                reached.update(decision.transitions)
    return frozenset(reached), tuple(errors)


def test_no_observation_produces_an_undeclared_move() -> None:
    reached, errors = _walk()
    assert not errors, "\n".join(errors[:20])
    assert set(EDGES) >= reached


@pytest.mark.parametrize("edge", EDGES, ids=lambda e: f"{e.src}-{e.on.name}-{e.dst}")
def test_every_declared_edge_is_reached(edge: Edge) -> None:
    assert edge in _walk()[0], f"no observation in the grid moves {edge.src} on {edge.on.name}"
