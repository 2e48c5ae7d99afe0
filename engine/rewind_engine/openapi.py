"""The OpenAPI 3.1 document of a job's control API (control.py), served at
`GET /openapi.json`.

It is the reference for clients (the operator's engine_client, `rewind status`/`stop`,
your own tools). What must stay true: every route control.py serves is here with the
same method, and nothing else (tests/test_engine/test_openapi.py compares them).
"""

from __future__ import annotations

from typing import Any

_JSON = "application/json"


def _ok(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"content": {_JSON: {"schema": schema or {"type": "object"}}}}
    return {"description": description, **body}


_SNAPSHOT_BRIEF: dict[str, Any] = {
    "type": ["object", "null"],
    "properties": {
        "id": {"type": "string"},
        "location": {"type": "string", "description": "URI of the snapshot folder"},
        "completed_at": {"type": ["string", "null"], "format": "date-time"},
    },
}

_TRIGGER_ERRORS = {
    "400": {"description": "The body is not a JSON object, or `target` is not a string."},
    "409": _ok(
        "The job is FINISHED, FAILED or CANCELED: nothing to take a savepoint of.",
        {"type": "object", "properties": {"error": {"type": "string"}}},
    ),
}

_ID = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}


def _savepoint_trigger(summary: str, answer: str, *, stop_field: bool) -> dict[str, Any]:
    """POST /savepoints and POST /stop: an optional JSON body, 202 with the request id."""
    fields: dict[str, Any] = {"target": {"type": "string"}}
    if stop_field:
        fields["stop"] = {"type": "boolean", "default": False}
    fields["drain"] = {"type": "boolean", "default": False}
    body = {"schema": {"type": "object", "properties": fields}}
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": False, "content": {_JSON: body}},
            "responses": {"202": _ok(answer, _ID)} | _TRIGGER_ERRORS,
        }
    }


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Rewind engine control API",
        "version": "1",
        "description": "Served by `rewind run` at --control HOST:PORT (default"
        " $REWIND_CONTROL or 127.0.0.1:8081). docs/CONTRACTS.md fixes the /status fields.",
    },
    "paths": {
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _ok("Serving.")}}},
        "/readyz": {
            "get": {
                "summary": "Readiness: state restored and records flowing",
                "responses": {
                    "200": _ok("Ready."),
                    "503": _ok("Not ready yet, or the job ended."),
                },
            }
        },
        "/status": {
            "get": {
                "summary": "The job's state, snapshots, source positions and counts",
                "responses": {
                    "200": _ok(
                        "The status.",
                        {
                            "type": "object",
                            "properties": {
                                "job_id": {"type": "string"},
                                "state": {
                                    "enum": [
                                        "RUNNING",
                                        "STOPPING",
                                        "FINISHED",
                                        "FAILED",
                                        "CANCELED",
                                    ]
                                },
                                "restored_from": {"type": ["string", "null"]},
                                "last_checkpoint": _SNAPSHOT_BRIEF,
                                "last_savepoint": _SNAPSHOT_BRIEF,
                                "last_checkpoint_age_s": {"type": ["number", "null"]},
                                "sources": {"type": "object"},
                                "records_in": {"type": "integer"},
                                "records_out": {"type": "integer"},
                                "steps": {
                                    "type": "object",
                                    "additionalProperties": {
                                        "type": "object",
                                        "properties": {
                                            "records_in": {"type": "integer"},
                                            "records_out": {"type": "integer"},
                                            "records_in_per_s": {"type": ["number", "null"]},
                                            "records_out_per_s": {"type": ["number", "null"]},
                                        },
                                    },
                                },
                            },
                        },
                    )
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format 0.0.4.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": _ok("OpenAPI 3.1.")}}
        },
        "/savepoints": _savepoint_trigger(
            "Trigger a savepoint (optionally stop the job with it)",
            "Triggered; poll GET /savepoints/{id}.",
            stop_field=True,
        ),
        "/savepoints/{id}": {
            "get": {
                "summary": "A savepoint request's progress",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _ok(
                        "IN_PROGRESS, COMPLETED (with size_bytes, sources) or FAILED (error).",
                        {
                            "type": "object",
                            "properties": {
                                "status": {"enum": ["IN_PROGRESS", "COMPLETED", "FAILED"]},
                                "location": {"type": "string"},
                                "error": {"type": ["string", "null"]},
                                "size_bytes": {"type": ["integer", "null"]},
                                "sources": {"type": ["object", "null"]},
                            },
                        },
                    ),
                    "404": {"description": "No such savepoint request in this job."},
                },
            }
        },
        "/stop": _savepoint_trigger(
            "Stop with a savepoint; a second stop returns the same id",
            "Stopping; poll GET /savepoints/{id}.",
            stop_field=False,
        ),
        "/cancel": {
            "post": {
                "summary": "Stop at once, without a savepoint",
                "responses": {"202": _ok("Cancelling.")},
            }
        },
    },
}
