"""The node gateway: loopback-only services of the host, reachable from pods at the node IP.

What flows through here: `python -m dev.node.gateway --listen 198.18.N.1 --forward PORT
...` accepts TCP connections on the node IP (the CNI bridge's address, which every pod
reaches without a default route) and copies bytes both ways to `127.0.0.1:PORT`, one
connection to the target per accepted connection. MinIO and the kube-apiserver bind one
address only, and that stays 127.0.0.1; the gateway gives pods the same port on the
node IP. TLS passes through untouched, so the API server's certificate must name the
address a client dialled (the node IP or the `kubernetes` Service IP; dev/plane/pki.py).
Kafka needs no gateway: its advertised address must be the one dialled, so it gets a
second listener of its own (dev/plane/components.py).

What must stay true: the gateway listens on the address it is given (the node IP, never
a wildcard) and connects only to loopback; a half-closed side is passed on as such (an
HTTP client that shuts down its writing side still gets its answer); it holds nothing
but sockets, so killing it loses only the connections in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import sys
from asyncio import StreamReader as Reader
from asyncio import StreamWriter as Writer

TARGET = "127.0.0.1"
CHUNK = 256 * 1024


async def _copy(reader: Reader, writer: Writer) -> None:
    """Copies until EOF, then half-closes the other side."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def _forward(port: int, client_r: Reader, client_w: Writer) -> None:
    try:
        target_r, target_w = await asyncio.open_connection(TARGET, port)
    except OSError:
        client_w.close()  # the target is down: the client sees a closed connection
        return
    try:
        await asyncio.gather(_copy(client_r, target_w), _copy(target_r, client_w))
    finally:
        for w in (client_w, target_w):
            w.close()
            with contextlib.suppress(ConnectionError, OSError):
                await w.wait_closed()


async def serve(listen: str, ports: list[int], stop: asyncio.Event) -> None:
    """Forwards `listen:port` to 127.0.0.1:port for each port, until `stop` is set."""
    servers = []
    for port in ports:

        async def handle(r: Reader, w: Writer, port: int = port) -> None:
            await _forward(port, r, w)

        servers.append(await asyncio.start_server(handle, listen, port, reuse_address=True))
    print(f"gateway: {listen} ports {ports} -> {TARGET}", file=sys.stderr, flush=True)
    await stop.wait()
    for s in servers:
        s.close()  # connections in flight end with the process


async def _run(listen: str, ports: list[int]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(listen, ports, stop)


def _unicast(value: str) -> str:
    ip = ipaddress.ip_address(value)
    if ip.is_unspecified or ip.is_loopback:
        raise argparse.ArgumentTypeError(f"{value}: the node IP, not a wildcard or loopback")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.node.gateway", description=__doc__)
    parser.add_argument("--listen", type=_unicast, required=True, help="the node IP")
    parser.add_argument("--forward", type=int, action="append", required=True, help="a port")
    args = parser.parse_args(argv)
    asyncio.run(_run(args.listen, args.forward))
    return 0


if __name__ == "__main__":
    sys.exit(main())
