"""The exchange's wire format: many elements of one channel in one Kafka message.

Flows through here: the elements one upstream subtask sends to one downstream subtask
(batches, watermarks, barriers, in order) are packed into one message value, msgpack
and never pickle (exchange data is data, like a snapshot):

    [FORMAT, attempt, source subtask, [item, ...]]
    item = [BATCH, records | nil, timestamps | nil, packed keys | nil]
         | [WATERMARK, ts, idle]
         | [BARRIER, checkpoint id]

1. Records use the snapshot codec (tuples, sets stay what they were: a record that
   crosses a worker must equal one that did not).
2. Keys are packed apart as one msgpack array with tuples as arrays (the fast path for
   composite keys, as in a snapshot's key column) and turned back into tuples on
   decode (as `keys.decode_key` does): a key is never a list.
3. A batch whose records are its keys (the edge into a keyed count carries keys only:
   routing.HashRouter's `keys_only`) sends nil for the records: the keys once.
4. `attempt` names the run of the job that wrote the message; a receiver drops messages
   of any other attempt (exchange.py says why that makes the exchange exactly-once).

What must stay true: decode(encode(x)) == x for every element sequence; the order of
items is the order the elements were sent in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from ..snapshots import codec
from .elements import Barrier, Batch, Element, Watermark

FORMAT = 2
"""2: records may be nil (they are the keys)."""
BATCH, WATERMARK, BARRIER = 0, 1, 2


class ExchangeCodecError(ValueError):
    """An exchange message that this engine cannot read (malformed or newer format)."""


def encode(attempt: str, source: int, elements: Sequence[Element]) -> bytes:
    packer = codec.new_packer()
    key_packer = codec.new_key_packer()
    items: list[Any] = []
    for element in elements:
        if type(element) is Batch:
            keys = key_packer.pack(element.keys) if element.keys is not None else None
            records = None if element.records is element.keys else element.records
            items.append([BATCH, records, element.timestamps, keys])
        elif type(element) is Watermark:
            items.append([WATERMARK, element.ts, element.idle])
        elif type(element) is Barrier:
            items.append([BARRIER, element.checkpoint_id])
        else:
            raise TypeError(f"not an exchange element: {element!r}")
    return codec.encode([FORMAT, attempt, source, items], packer)


def decode(data: bytes | memoryview) -> tuple[str, int, list[Element]]:
    """(attempt, source subtask, elements) of one message."""
    try:
        version, attempt, source, items = codec.decode(data)
    except (ValueError, TypeError) as exc:
        raise ExchangeCodecError(f"malformed exchange message: {exc}") from exc
    if version != FORMAT:
        raise ExchangeCodecError(
            f"exchange message format {version}, this engine reads {FORMAT}: every worker "
            "of a job must run the same Rewind version"
        )
    out: list[Element] = []
    for item in items:
        kind = item[0]
        if kind == BATCH:
            keys = item[3]
            decoded = None
            if keys is not None:
                # use_list=False: every array comes back a tuple, which is right for keys
                # (a key is never a list) and 10x cheaper than decode_key per key.
                decoded = list(msgpack.unpackb(keys, raw=False, use_list=False))
            records = decoded if item[1] is None and decoded is not None else item[1]
            out.append(Batch(records, item[2], decoded))
        elif kind == WATERMARK:
            out.append(Watermark(item[1], bool(item[2])))
        elif kind == BARRIER:
            out.append(Barrier(item[1]))
        else:
            raise ExchangeCodecError(f"unknown exchange item kind {kind!r}")
    return attempt, source, out
