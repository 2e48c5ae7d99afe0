"""Post analytics v3-crash: a broken release that fails as it starts.

v2's steps and uids (so a savepoint of v1 or v2 restores, and a restore preflight
passes), but its counts go to a store it cannot open: the job fails while starting,
after the restore, every time. Used by the rollback tests: the operator upgrades to it,
it never becomes ready, and the operator must roll back to the last stable version from
the same savepoint.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from post_events import WATERMARKS, Params, output, post_events_source
from rewind_engine import Dataflow
from rewind_engine.connectors.base import Sink, SinkContext, SinkWriter


class UnreachableStore(Sink):
    """The new output store of v3, which the pods cannot reach."""

    def open(self, ctx: SinkContext, restored: list[Any]) -> SinkWriter:
        raise RuntimeError("post_analytics v3 crashes at start (on purpose, for rollback tests)")


def flow(argv: list[str]) -> Dataflow:
    params = Params.parse(argv)
    f = Dataflow("post_analytics")
    events = f.source("post-events", post_events_source(params), watermarks=WATERMARKS)
    (
        events.key_by("by-post-and-kind", lambda e: (e["post_id"], e["kind"]))
        .count("views-and-clicks")
        .map("counts-as-rows", lambda kc: {"post_id": kc[0][0], "kind": kc[0][1], "count": kc[1]})
        .sink("counts-out", UnreachableStore())
    )
    # v2's second branch, so that v2's state has a step to go to.
    (
        events.key_by("by-post-kind-paid", lambda e: (e["post_id"], e["kind"], e["paid"]))
        .count("organic-and-paid")
        .map(
            "organic-paid-as-rows",
            lambda kc: {"post_id": kc[0][0], "kind": kc[0][1], "paid": kc[0][2], "count": kc[1]},
        )
        .sink("organic-paid-out", output(params, "organic_paid"))
    )
    return f
