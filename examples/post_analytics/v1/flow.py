"""Post analytics v1: count views and clicks per post.

post events -> key by (post_id, kind) -> running count -> files under OUT/counts/
(exactly once). The uids below are this flow's identity: v2 keeps them so that it can
continue from v1's savepoint.
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
    return f
