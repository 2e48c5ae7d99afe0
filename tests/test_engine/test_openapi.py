"""The OpenAPI document of the control API matches the routes the engine serves, is
served at GET /openapi.json, and the 409 it promises is what a done job returns."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

from rewind_engine import CollectionSource, CollectSink, Dataflow, control
from rewind_engine.openapi import OPENAPI
from rewind_engine.runtime.job import Job
from rewind_engine.settings import Settings


def test_the_document_lists_exactly_the_served_routes() -> None:
    flow = Dataflow("f")
    flow.source("src", CollectionSource([1, 2, 3])).sink("out", CollectSink())
    app = control.make_app(Job(flow))
    served = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    documented = {(path, method) for path, ops in OPENAPI["paths"].items() for method in ops}
    assert served == documented


def test_it_is_served_and_a_done_job_refuses_a_savepoint_with_409(tmp_path: Path) -> None:
    flow = Dataflow("f")
    flow.source("src", CollectionSource([1, 2, 3])).sink("out", CollectSink())
    settings = Settings(control="127.0.0.1:0")
    settings.snapshots.location = f"file://{tmp_path}/snap"
    job = Job(flow, settings)

    async def scenario() -> tuple[dict[str, object], int]:
        runner = await control.start(job, "127.0.0.1:0")
        base = f"http://{control.served_address(runner)}"
        try:
            assert await job.run() == "FINISHED"

            def calls() -> tuple[dict[str, object], int]:
                with urllib.request.urlopen(f"{base}/openapi.json", timeout=10) as resp:
                    doc = json.loads(resp.read())
                req = urllib.request.Request(
                    f"{base}/savepoints", data=b"{}", method="POST",
                    headers={"Content-Type": "application/json"},
                )  # fmt: skip
                try:
                    urllib.request.urlopen(req, timeout=10)
                except urllib.error.HTTPError as exc:
                    return doc, exc.code
                return doc, 202

            return await asyncio.to_thread(calls)
        finally:
            await runner.cleanup()

    doc, code = asyncio.run(scenario())
    assert doc == json.loads(json.dumps(OPENAPI))
    assert code == 409
    assert "409" in OPENAPI["paths"]["/savepoints"]["post"]["responses"]
