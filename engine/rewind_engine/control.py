"""The control API of a running job (aiohttp), as fixed in openapi.py and docs/CONTRACTS.md.

    GET  /healthz            200 while the process serves requests
    GET  /readyz             200 once state is restored and the job processes, else 503
    GET  /status             job id, state, last checkpoint/savepoint, sources, counts
    GET  /metrics            Prometheus text
    POST /savepoints         {"target": URI?, "stop": bool, "drain": bool} -> 202 {"id"}
    GET  /savepoints/{id}    {"status": IN_PROGRESS|COMPLETED|FAILED, "location", "error", ...}
    POST /stop               {"target"?, "drain"?}: stop with a savepoint -> 202 {"id"}
    POST /cancel             stop at once, no savepoint -> 202
    GET  /openapi.json       this API as an OpenAPI 3.1 document (openapi.py)

Handlers run on the job's own asyncio loop, so they read and poke the job without locks;
none of them blocks. What must stay true: a savepoint request only starts a savepoint
(its failure is reported by GET /savepoints/{id}, never by killing the job).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from .openapi import OPENAPI
from .runtime.coordinator import IN_PROGRESS
from .runtime.job import DONE, Job

JOB_KEY = web.AppKey("job", Job)


def _job(request: web.Request) -> Job:
    return request.app[JOB_KEY]


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except json.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return body


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    job = _job(request)
    ready = job.ready and job.state not in DONE
    return web.json_response({"ready": ready, "state": job.state}, status=200 if ready else 503)


async def status(request: web.Request) -> web.Response:
    return web.json_response(_job(request).status())


def _trigger(job: Job, target: Any, stop: bool, drain: bool) -> web.Response:
    if target is not None and not isinstance(target, str):
        raise web.HTTPBadRequest(text='"target" must be a URI string')
    if job.state in DONE:
        return web.json_response({"error": f"the job is {job.state}"}, status=409)
    req = job.trigger_savepoint(target, stop=stop, drain=drain)
    return web.json_response({"id": req.id}, status=202)


async def post_savepoint(request: web.Request) -> web.Response:
    body = await _json_body(request)
    return _trigger(
        _job(request), body.get("target"), bool(body.get("stop")), bool(body.get("drain"))
    )


async def get_savepoint(request: web.Request) -> web.Response:
    job = _job(request)
    req = job.requests.get(request.match_info["id"])
    if req is None:
        raise web.HTTPNotFound(text=f"no savepoint {request.match_info['id']!r} in this job")
    if req.status != IN_PROGRESS:
        req.result_read = True
    return web.json_response(req.to_json())


async def stop(request: web.Request) -> web.Response:
    body = await _json_body(request)
    return _trigger(_job(request), body.get("target"), True, bool(body.get("drain")))


async def cancel(request: web.Request) -> web.Response:
    job = _job(request)
    job.cancel()
    return web.json_response({"state": job.state, "cancel": True}, status=202)


class _JobCollector:
    """Reads the job's counters at scrape time (no per-record metric calls)."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def collect(self) -> Iterator[Any]:
        job = self.job
        rin = CounterMetricFamily("rewind_step_records_in", "Records into a step", labels=["step"])
        rout = CounterMetricFamily(
            "rewind_step_records_out", "Records out of a step", labels=["step"]
        )
        for uid, (i, o) in job.step_metrics().items():
            rin.add_metric([uid], i)
            rout.add_metric([uid], o)
        yield rin
        yield rout
        dur = SummaryMetricFamily(
            "rewind_snapshot_duration_seconds",
            "Time from trigger to completed manifest",
            labels=["kind"],
        )
        size = GaugeMetricFamily(
            "rewind_snapshot_size_bytes", "Size of the last completed snapshot", labels=["kind"]
        )
        for kind in ("checkpoint", "savepoint"):
            count, total, last_size = job.snapshot_stats.get(kind, (0, 0.0, 0))
            dur.add_metric([kind], count, total)
            if count:
                size.add_metric([kind], last_size)
        yield dur
        yield size
        failed = CounterMetricFamily(
            "rewind_snapshots_failed", "Snapshots that failed", labels=["kind"]
        )
        for kind in ("checkpoint", "savepoint"):
            failed.add_metric([kind], job.failed_snapshots.get(kind, 0))
        yield failed
        age = job.last_snapshot_age_s()
        if age is not None:
            yield GaugeMetricFamily(
                "rewind_last_checkpoint_age_seconds",
                "Seconds since the last completed checkpoint or savepoint",
                value=age,
            )
        yield GaugeMetricFamily(
            "rewind_job_ready", "1 when the job is restored and processing", value=int(job.ready)
        )


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


async def metrics(request: web.Request) -> web.Response:
    registry: CollectorRegistry = request.app[REGISTRY_KEY]
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": "text/plain; version=0.0.4"}
    )


REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)


def make_app(job: Job) -> web.Application:
    app = web.Application()
    app[JOB_KEY] = job
    registry = CollectorRegistry()
    registry.register(_JobCollector(job))
    app[REGISTRY_KEY] = registry
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/savepoints", post_savepoint)
    app.router.add_get("/savepoints/{id}", get_savepoint)
    app.router.add_post("/stop", stop)
    app.router.add_post("/cancel", cancel)
    app.router.add_get("/openapi.json", openapi)
    return app


def parse_address(address: str) -> tuple[str, int]:
    """HOST:PORT -> (host, port); IPv6 hosts in brackets."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"control address must be HOST:PORT, got {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def start(job: Job, address: str) -> web.AppRunner:
    """Serve the control API on exactly `address` (the engine binds only what it is given)."""
    host, port = parse_address(address)
    runner = web.AppRunner(make_app(job), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def served_address(runner: web.AppRunner) -> str:
    """HOST:PORT the runner actually listens on (port 0 resolved to the real port)."""
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            host = str(addr[0])
            return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    raise RuntimeError("the control API listens nowhere")
