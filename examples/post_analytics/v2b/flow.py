"""Post analytics v2b: the A/B alternative to v2.

Keeps v1's steps and uids (so it can start from the same savepoint as v2) and, instead
of v2's organic/paid counts, counts only paid clicks per post in 1-minute event-time
windows (new uids). Output: OUT/counts/ and OUT/paid_clicks_per_minute/.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from post_events import WATERMARKS, Params, output, post_events_source
from rewind_engine import Dataflow, TumblingWindows


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
    (
        events.filter("paid-clicks", lambda e: e["paid"] and e["kind"] == "click")
        .key_by("by-post", "post_id")
        .window("paid-clicks-per-minute", TumblingWindows(60_000), "count")
        .sink("paid-clicks-out", output(params, "paid_clicks_per_minute"))
    )
    return f
