"""Records per second per step, for `GET /status` and `rewind status`.

The scheduler hands in the steps' cumulative counters about once a second (`sample`);
`rates` compares the newest sample with the oldest one kept (a window of about ten
seconds), so a figure reflects the recent past rather than the whole life of the job.
What must stay true: sampling costs one dict per second, never anything per record; a
job younger than two samples reports no rate (None) rather than a made-up one.
"""

from __future__ import annotations

from collections import deque

Counts = dict[str, tuple[int, int]]
"""uid -> (records in, records out), cumulative."""


class Rates:
    """A short history of counter samples and the rates between its ends."""

    def __init__(self, window: int = 10, every_s: float = 1.0) -> None:
        self.every_s = every_s
        """Seconds between samples; `due` says when the next one is wanted."""
        self._samples: deque[tuple[float, Counts]] = deque(maxlen=window + 1)

    def due(self, now: float) -> bool:
        return not self._samples or now - self._samples[-1][0] >= self.every_s

    def sample(self, now: float, counts: Counts) -> None:
        self._samples.append((now, counts))

    def rates(self) -> dict[str, tuple[float, float] | None]:
        """uid -> (records in per s, records out per s) over the window; None if unknown."""
        if len(self._samples) < 2:
            return {uid: None for uid in (self._samples[-1][1] if self._samples else {})}
        (t0, first), (t1, last) = self._samples[0], self._samples[-1]
        span = t1 - t0
        out: dict[str, tuple[float, float] | None] = {}
        for uid, (i, o) in last.items():
            i0, o0 = first.get(uid, (0, 0))
            out[uid] = (round((i - i0) / span, 1), round((o - o0) / span, 1))
        return out
