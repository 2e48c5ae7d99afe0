"""Post analytics v3-crash: a broken release that fails as it starts.

Used by the rollback tests: the operator upgrades to it, it never becomes ready, and
the operator must roll back to the last stable version from the same savepoint.
"""

from __future__ import annotations

from rewind_engine import Dataflow


def flow(argv: list[str]) -> Dataflow:
    raise RuntimeError("post_analytics v3 crashes at start (on purpose, for rollback tests)")
