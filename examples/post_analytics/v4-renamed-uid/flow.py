"""Post analytics v4-renamed-uid: v1 with the uid of its count changed by mistake.

The count's state in every savepoint of v1 belongs to uid `views-and-clicks`; this
version calls the same step `views-and-clicks-v4`, so it cannot take that state over.
A restore refuses it (naming the uid) unless state may be dropped
(`--allow-non-restored-state`, `spec.restore.allowNonRestoredState`), and then its
counts start from zero. Used by the restore preflight tests.
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
        .count("views-and-clicks-v4")
        .map("counts-as-rows", lambda kc: {"post_id": kc[0][0], "kind": kc[0][1], "count": kc[1]})
        .sink("counts-out", output(params, "counts"))
    )
    return f
