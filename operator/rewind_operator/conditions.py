"""Kubernetes-style conditions on a status: set one, read one.

What must stay true: `lastTransitionTime` moves only when a condition's status changes
(not its reason or message), and conditions are listed Ready, Progressing, Degraded.
"""

from __future__ import annotations

from datetime import datetime

from rewind_operator.models import (
    Condition,
    StreamAppStatus,
)
from rewind_operator.vocabulary import (
    CONDITION_TYPES,
    ConditionStatus,
)


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Conditions with `type_` set; lastTransitionTime moves only when status changes."""
    old = next((c for c in conditions if c.type == type_), None)
    since = old.last_transition_time if old is not None and old.status == status else now
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    rest = [c for c in conditions if c.type != type_]
    order: dict[str, int] = {type_: i for i, type_ in enumerate(CONDITION_TYPES)}
    return sorted([*rest, new], key=lambda c: order.get(c.type, 9))


def condition(status: StreamAppStatus, type_: str) -> Condition | None:
    """The condition of that type, if set."""
    return next((c for c in status.conditions if c.type == type_), None)
