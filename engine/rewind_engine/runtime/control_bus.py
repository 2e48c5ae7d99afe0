"""Control messages between the job's coordinator and its workers, through Kafka.

Why Kafka and not HTTP: the workers already hold a producer and a consumer for the
exchange, so control needs no second transport, no worker needs an address (indexed
pods need no Service each; only the coordinator serves the job's control API), and
a message sent before its reader was ready is not lost (it waits in the topic).

The job's control topic (placement.control_topic) has two partitions: UP (workers ->
coordinator, read by the coordinator only) and DOWN (coordinator -> workers, read by
every worker, the coordinator's own included). Every message is a msgpack map with
"k" (the kind, below), "a" (the attempt) and "w" (the sender's worker index), plus the
fields of its kind. The protocol, step by step:

1. Start. Every worker restores, positions its consumers at the end of every partition
   it reads (exchange.py) and waits. The coordinator draws the attempt token and sends
   ANNOUNCE until every worker answered HELLO with that attempt; then GO. No exchange
   record is produced before GO, so nothing of this attempt is missed.
2. Running. Every worker sends HB (state, sources finished, counts) every
   `heartbeat_s`; the coordinator sends HB down. Silence longer than `worker_timeout_s`
   either way fails the job with a message naming who went silent.
3. Checkpoint n (global_checkpoint.py): TRIGGER n down; each worker writes its part and
   answers PART n (ok or the error); the coordinator writes the manifest and sends
   COMMIT n (sinks commit, a final or stop snapshot ends the job), or ABORT n.
4. Failure. A worker whose job fails sends ERROR; the coordinator sends FAIL to all and
   fails itself; CANCEL ends every worker without a snapshot.

What must stay true: a message of another attempt is ignored (a zombie of an old run).
"""

from __future__ import annotations

from typing import Any

import msgpack

UP, DOWN = 0, 1
PARTITIONS = 2

ANNOUNCE, HELLO, GO, HB = "announce", "hello", "go", "hb"
TRIGGER, PART, COMMIT, ABORT = "trigger", "part", "commit", "abort"
ERROR, FAIL, CANCEL = "error", "fail", "cancel"


def encode(kind: str, attempt: str, worker: int, fields: dict[str, Any]) -> bytes:
    return msgpack.packb({"k": kind, "a": attempt, "w": worker, **fields}, use_bin_type=True)  # type: ignore[no-any-return]


def decode(data: bytes) -> dict[str, Any]:
    msg = msgpack.unpackb(data, raw=False)
    if not isinstance(msg, dict) or "k" not in msg:
        raise ValueError(f"not a control message: {msg!r}")
    return msg
