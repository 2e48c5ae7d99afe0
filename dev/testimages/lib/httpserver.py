"""The small HTTP server behind the test images rewind-dev/http-server:v1 and :v2.

It binds ``$POD_IP:$PORT`` (defaults 127.0.0.1:8080), the way a pod binds its own
address, and answers:

- ``GET /``          JSON: version, pod name, pid, address (what the harness tests check)
- ``GET /healthz``   200 "ok", or 500 after ``POST /break`` (to fail a liveness probe)
- ``GET /env``       JSON of the process environment
- ``GET /file?path=P`` the content of file P as the process sees it (volume mounts)

SIGTERM ends it with exit code 0, as a well-behaved server does.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def serve(version: str) -> None:
    host = os.environ.get("POD_IP", "127.0.0.1")
    port = int(os.environ.get("PORT", "8080"))
    broken = False

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/":
                info = {
                    "version": version,
                    "pod": os.environ.get("POD_NAME"),
                    "pid": os.getpid(),
                    "address": f"{host}:{port}",
                    "cwd": os.getcwd(),
                }
                self._send(200, json.dumps(info).encode())
            elif url.path == "/healthz":
                self._send(500 if broken else 200, b"broken" if broken else b"ok", "text/plain")
            elif url.path == "/env":
                self._send(200, json.dumps(dict(os.environ)).encode())
            elif url.path == "/file":
                path = parse_qs(url.query).get("path", [""])[0]
                try:
                    with open(path, "rb") as f:
                        self._send(200, f.read(), "application/octet-stream")
                except OSError as exc:
                    self._send(404, str(exc).encode(), "text/plain")
            else:
                self._send(404, b"not found", "text/plain")

        def do_POST(self) -> None:
            nonlocal broken
            if self.path == "/break":
                broken = True
                self._send(200, b"broken", "text/plain")
            else:
                self._send(404, b"not found", "text/plain")

        def log_message(self, format: str, *args: object) -> None:
            print(f"{self.address_string()} {format % args}", flush=True)

    server = ThreadingHTTPServer((host, port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"http-server {version} listening on {host}:{port} (pid {os.getpid()})", flush=True)
    try:
        server.serve_forever()
    finally:
        print(f"http-server {version} stopping", flush=True)
