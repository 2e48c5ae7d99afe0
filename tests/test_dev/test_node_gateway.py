"""The node gateway (dev/node/gateway.py) copies both ways, passes a half-close on, closes
a connection whose target is down, and refuses to listen on a wildcard or loopback.

127.0.0.2 stands in for the node IP here: the same port on another address, as on the
real node (where the gateway listens on 198.18.N.1 and the target is 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from dev.node import gateway

STAND_IN = "127.0.0.2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((gateway.TARGET, 0))
        return int(s.getsockname()[1])


async def _upper_until_eof(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """A target that answers only once the client has half-closed (like an HTTP/1.0
    server reading a whole request): the half-close must reach it."""
    data = await r.read()
    w.write(data.upper())
    await w.drain()
    w.close()


async def _through(port: int, payload: bytes) -> bytes:
    r, w = await asyncio.open_connection(STAND_IN, port)
    w.write(payload)
    await w.drain()
    w.write_eof()
    answer = await r.read()
    w.close()
    return answer


def test_bytes_go_both_ways_and_a_half_close_passes() -> None:
    port = _free_port()
    payload = b"x" * (3 * gateway.CHUNK + 7)

    async def scenario() -> bytes:
        target = await asyncio.start_server(_upper_until_eof, gateway.TARGET, port)
        stop = asyncio.Event()
        task = asyncio.create_task(gateway.serve(STAND_IN, [port], stop))
        while True:  # until the gateway listens
            try:
                answer = await _through(port, payload)
                break
            except ConnectionRefusedError:
                await asyncio.sleep(0.05)
        stop.set()
        await task
        target.close()
        return answer

    assert asyncio.run(scenario()) == payload.upper()


def test_a_target_that_is_down_closes_the_connection() -> None:
    port = _free_port()

    async def scenario() -> bytes:
        stop = asyncio.Event()
        task = asyncio.create_task(gateway.serve(STAND_IN, [port], stop))
        while True:
            try:
                r, w = await asyncio.open_connection(STAND_IN, port)
                break
            except ConnectionRefusedError:
                await asyncio.sleep(0.05)
        answer = await r.read()
        w.close()
        stop.set()
        await task
        return answer

    assert asyncio.run(scenario()) == b""


@pytest.mark.parametrize("address", ["0.0.0.0", "127.0.0.1", "::"])
def test_it_listens_only_on_a_node_address(address: str) -> None:
    with pytest.raises(SystemExit):
        gateway.main(["--listen", address, "--forward", "1"])
