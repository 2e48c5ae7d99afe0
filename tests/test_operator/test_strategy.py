"""Upgrade modes are one row each; the rows say what the stories in test_decide_app show."""

from __future__ import annotations

from rewind_operator.strategy import STRATEGIES
from rewind_operator.vocabulary import LATEST, UPGRADE_MODES


def test_every_upgrade_mode_has_exactly_one_row() -> None:
    assert sorted(STRATEGIES) == sorted(UPGRADE_MODES)


def test_only_savepoint_mode_takes_a_savepoint_and_only_stateless_forgets() -> None:
    assert [m for m, s in STRATEGIES.items() if s.savepoint_first] == ["savepoint"]
    assert [m for m, s in STRATEGIES.items() if not s.keeps_state] == ["stateless"]
    assert all((s.restart_from == LATEST) == s.keeps_state for s in STRATEGIES.values())
