"""The operator's words: each constant class lists exactly its Literal's values, reasons
are CamelCase, and the state machines' tunables have their defaults in one place."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, get_args

import pytest
from rewind_operator import vocabulary as v
from rewind_operator.policy import Policy
from rewind_operator.settings import DEFAULT_POLICY, ReconcileSettings, Settings


def values(namespace: type) -> list[Any]:
    return [value for key, value in vars(namespace).items() if key.isupper()]


@pytest.mark.parametrize(
    ("constants", "literal"),
    [
        (v.Mode, v.UpgradeMode),
        (v.Desired, v.JobState),
        (v.Phase, v.AppPhase),
        (v.Kind, v.OperationKind),
        (v.Stage, v.OperationStage),
        (v.Cond, v.ConditionType),
        (v.SpReason, v.SavepointReason),
        (v.SpPhase, v.SavepointPhase),
    ],
)
def test_constants_list_exactly_the_literal(constants: type, literal: Any) -> None:
    assert sorted(values(constants)) == sorted(get_args(literal))


@pytest.mark.parametrize("namespace", [v.Reason, v.EventReason])
def test_reasons_are_unique_camel_case_words(namespace: type) -> None:
    found = values(namespace)
    assert found and len(found) == len(set(found))
    assert all(re.fullmatch(r"[A-Z][a-zA-Z]+", reason) for reason in found), found


def test_savepoint_phase_sets_partition_the_phases() -> None:
    assert set(v.SAVEPOINT_PHASES) == v.SAVEPOINT_OPEN | v.SAVEPOINT_TERMINAL
    assert not v.SAVEPOINT_OPEN & v.SAVEPOINT_TERMINAL
    assert v.SAVEPOINT_UNUSABLE < v.SAVEPOINT_TERMINAL


def test_savepoint_phase_parses_stored_text() -> None:
    assert v.savepoint_phase(None) == "Pending"
    assert v.savepoint_phase("Completed") == "Completed"
    with pytest.raises(ValueError, match="unknown Savepoint phase 'Done'"):
        v.savepoint_phase("Done")


def test_policy_has_no_defaults_of_its_own() -> None:
    """Every default lives in `settings`; the policy is only ever built from there."""
    missing = dataclasses.MISSING
    assert all(
        f.default is missing and f.default_factory is missing for f in dataclasses.fields(Policy)
    )
    assert Settings().policy() == DEFAULT_POLICY
    assert (
        DEFAULT_POLICY.upgrade_retry_delay.total_seconds()
        == ReconcileSettings().upgrade_retry_delay_s
    )
