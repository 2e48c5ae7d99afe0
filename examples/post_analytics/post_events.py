"""Post events for the post-analytics story, and the flows' parameters.

`post_event(seq)` is a pure function of the record number: every version of the flow,
every restart and every parallelism sees exactly the same events, which is what lets
the tests compare a restored run with an uninterrupted one record for record.

Parameters come from arguments (`--out DIR --rate N --total N --posts N`) or, when
absent, from the environment (`REWIND_OUT`, `REWIND_RATE`, `REWIND_TOTAL`,
`REWIND_POSTS`), so that tests and the operator (through the pod's env) can drive them.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewind_engine import BoundedOutOfOrderness, GeneratorSource, skewed, uniform

BASE_TS = 1_700_000_000_000
"""Event time of event 0 (ms): a fixed date, so windows are reproducible."""
MS_PER_EVENT = 10


def post_event(seq: int, posts: int = 100) -> dict[str, Any]:
    """Event number `seq`: a view (80 %) or click (20 %) on a post, paid 30 % of the time.

    Popular posts get most events (skew 2); timestamps advance 10 ms per event with up to
    200 ms of disorder."""
    return {
        "seq": seq,
        "post_id": skewed(seq, posts, 2.0, salt=1),
        "kind": "click" if uniform(seq, 2) < 0.2 else "view",
        "paid": uniform(seq, 3) < 0.3,
        "ts": BASE_TS + seq * MS_PER_EVENT - int(uniform(seq, 4) * 200),
    }


@dataclass
class Params:
    out: Path
    rate: float | None
    total: int | None
    posts: int

    @classmethod
    def parse(cls, argv: list[str]) -> Params:
        env = os.environ
        p = argparse.ArgumentParser(prog="post_analytics")
        p.add_argument("--out", default=env.get("REWIND_OUT", "./out"))
        p.add_argument("--rate", type=float, default=_num(env.get("REWIND_RATE")))
        p.add_argument("--total", type=int, default=_int(env.get("REWIND_TOTAL")))
        p.add_argument("--posts", type=int, default=_int(env.get("REWIND_POSTS")) or 100)
        a = p.parse_args(argv)
        return cls(Path(a.out), a.rate or None, a.total, a.posts)


def _num(text: str | None) -> float | None:
    return float(text) if text else None


def _int(text: str | None) -> int | None:
    return int(text) if text else None


def post_events_source(params: Params) -> GeneratorSource:
    """The resettable source of post events (2 splits, so parallelism 2 reads in parallel)."""
    posts = params.posts
    return GeneratorSource(
        lambda seq: post_event(seq, posts), total=params.total, rate=params.rate, splits=2
    )


WATERMARKS = BoundedOutOfOrderness(max_out_of_orderness_ms=200, timestamp="ts")
"""Event time from the `ts` field; events arrive up to 200 ms out of order."""
