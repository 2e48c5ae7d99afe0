"""The kubelet's ``/containerLogs`` endpoint, so that ``kubectl logs`` works.

``kubectl logs`` asks the apiserver, which connects to the node's InternalIP (127.0.0.1)
on ``status.daemonEndpoints.kubeletEndpoint.Port`` over HTTPS and relays
``GET /containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=&previous=&limitBytes=``.
The apiserver does not verify the kubelet's certificate unless it is started with
``--kubelet-certificate-authority``, so a self-signed certificate (made with ``openssl``
in the state folder) is enough; this server does not ask for a client certificate
either, which is acceptable only because it listens on loopback and serves a developer's
own pods.

What flows through: log files ``<state>/pods/<ns>_<pod>/<container>.log`` (and
``.previous.log``), read-only. ``follow`` streams until the container stops running or
the client goes away.
"""

from __future__ import annotations

import logging
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

log = logging.getLogger("kubelet.logs")
RunningCheck = Callable[[str, str, str], bool]


def ensure_certificate(state_dir: Path, node_name: str) -> tuple[Path, Path]:
    """The serving certificate: ``dev/cluster``'s (``pki/kubelet-serving``) when it made
    one, else a self-signed one for 127.0.0.1, made once."""
    pki = state_dir / "pki"
    if (pki / "kubelet-serving.crt").exists() and (pki / "kubelet-serving.key").exists():
        return pki / "kubelet-serving.crt", pki / "kubelet-serving.key"
    folder = state_dir / "kubelet"
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "serving.crt", folder / "serving.key"
    if not (cert.exists() and key.exists()):
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-sha256",
                "-days",
                "3650",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-subj",
                f"/CN={node_name}",
                "-addext",
                f"subjectAltName=IP:127.0.0.1,DNS:{node_name}",
            ],
            check=True,
            capture_output=True,
        )
        key.chmod(0o600)
    return cert, key


def tail(data: bytes, lines: int) -> bytes:
    """The last ``lines`` lines of ``data``."""
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


class LogServer:
    """Serves container logs over HTTPS on 127.0.0.1 from a daemon thread."""

    def __init__(self, state_dir: Path, node_name: str, port: int, running: RunningCheck) -> None:
        self._pods = state_dir / "pods"
        self._running = running
        cert, key = ensure_certificate(state_dir, node_name)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.handle(self)

            def log_message(self, format: str, *args: object) -> None:
                log.debug(format, *args)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="log-server", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        url = urlparse(req.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if parts == ["healthz"]:
            self._reply(req, 200, b"ok")
            return
        if (
            len(parts) != 4
            or parts[0] != "containerLogs"
            or any(".." in p or "/" in p for p in parts)
        ):
            self._reply(req, 404, b"not found")
            return
        _, namespace, pod, container = parts
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        previous = query.get("previous") == "true"
        suffix = ".previous.log" if previous else ".log"
        path = self._pods / f"{namespace}_{pod}" / f"{container}{suffix}"
        if not path.exists():
            what = "previous terminated container" if previous else "container"
            self._reply(req, 404, f'{what} "{container}" in pod "{pod}" has no log\n'.encode())
            return
        data = path.read_bytes()
        if "tailLines" in query:
            data = tail(data, int(query["tailLines"]))
        limit = int(query["limitBytes"]) if "limitBytes" in query else None
        if limit is not None:
            data = data[:limit]
        req.send_response(200)
        req.send_header("Content-Type", "text/plain")
        req.end_headers()
        try:
            req.wfile.write(data)
            req.wfile.flush()
            if query.get("follow") == "true" and not previous:
                self._follow(req, path, namespace, pod, container, path.stat().st_size)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            return

    def _follow(
        self,
        req: BaseHTTPRequestHandler,
        path: Path,
        ns: str,
        pod: str,
        container: str,
        offset: int,
    ) -> None:
        with open(path, "rb") as f:
            f.seek(offset)
            while True:
                chunk = f.read(65536)
                if chunk:
                    req.wfile.write(chunk)
                    req.wfile.flush()
                    continue
                if not self._running(ns, pod, container):
                    req.wfile.write(f.read())
                    return
                time.sleep(0.2)

    @staticmethod
    def _reply(req: BaseHTTPRequestHandler, code: int, body: bytes) -> None:
        req.send_response(code)
        req.send_header("Content-Type", "text/plain")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)
