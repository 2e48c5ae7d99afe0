"""Post analytics v2: v1 plus organic and paid counts apart.

Same uids as v1 for v1's steps (their state continues from v1's savepoint); the new
steps have new uids and start empty. Output: OUT/counts/ as before, and
OUT/organic_paid/ with {"post_id", "kind", "paid", "count"}.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from post_events import WATERMARKS, Params, output, post_events_source
from rewind_engine import Dataflow


def flow(argv: list[str]) -> Dataflow:
    params = Params.parse(argv)
    f = Dataflow("post_analytics")
    events = f.source("post-events", post_events_source(params), watermarks=WATERMARKS)
    (
        events.key_by("by-post-and-kind", lambda e: (e["post_id"], e["kind"]))
        .count("views-and-clicks")
        .map("counts-as-rows", lambda kc: {"post_id": kc[0][0], "kind": kc[0][1], "count": kc[1]})
        .sink("counts-out", output(params, "counts"))
    )
    # New in v2: organic and paid apart (new uids, so they start empty on restore).
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
