"""What `/openapi.json` says about the prediction endpoints, so that `/docs` can try an upload.

The app reads each request body itself (size, time and memory limits, docs/serving.md), so
FastAPI sees no body parameter and documents none. Here each served task gets its own
operation, `POST /v1/<task>`, whose request body lists what the endpoint takes: a multipart
form of files in the field `file`, or one raw file with one of the task's media types (from
its contract, `Task.media_types`). Query parameters come from the loaded model's predictor
(`Predictor.parameters`), so they show once the model is loaded.

The schema is OpenAPI 3.0: the Swagger UI served offline (`liveml.serving.swagger`, from the
`swagger-ui-bundle` package) renders 3.0 documents only.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

OPENAPI_VERSION = "3.0.3"
BEARER = "bearer"

_BINARY = {"type": "string", "format": "binary"}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "code", "message"],
            "properties": {
                "status": {"type": "integer", "example": 415},
                "code": {"type": "string", "example": "unsupported_media_type"},
                "message": {"type": "string", "description": "what is wrong and the fix"},
            },
        }
    },
}
ANSWER_SCHEMA = {
    "type": "object",
    "required": ["model", "results", "latency_ms"],
    "properties": {
        "model": {
            "type": "object",
            "description": "what answered: the model card's name, run id, fingerprint, commit, "
            "runtime, file and its SHA-256",
            "additionalProperties": True,
        },
        "results": {
            "type": "array",
            "description": "one answer per input, in the order sent; `filename` is the "
            "multipart file name (null for a raw body), the other keys are the task's",
            "items": {
                "type": "object",
                "properties": {"filename": {"type": "string", "nullable": True}},
                "additionalProperties": True,
            },
        },
        "latency_ms": {"type": "number"},
    },
}
# Answers of an upload endpoint besides 200 (docs/serving.md lists each limit).
_ERRORS = {
    "400": "malformed input (`corrupt_image`, `corrupt_audio`, `bad_multipart`, `empty_body`, "
    "`bad_parameter`)",
    "401": "no or wrong token (`unauthorized`; only when the server has a token)",
    "404": "no model is served for this task (`unknown_model`)",
    "408": "the body did not arrive in time (`body_timeout`)",
    "413": "over a size limit (`payload_too_large`, `image_too_large`, `audio_too_long`)",
    "415": "a media type the task does not take (`unsupported_media_type`)",
    "422": "a decodable input the model cannot take (`bad_sample_rate`, `empty_audio`, ...)",
    "500": "the model failed on an input (`model_error`)",
    "503": "not loaded yet (`not_ready`) or too busy (`overloaded`); retry after `Retry-After`",
}


def upload_operation(task: str, media_types: Iterable[str], max_items: int) -> dict[str, Any]:
    """The OpenAPI fields of `POST /v1/<task>` that FastAPI cannot infer: the request body (a
    multipart batch or one raw file of the task's media types) and the answers."""
    types = sorted(media_types, key=lambda t: (len(t), t))  # the plain names first
    accepted = ", ".join(types)
    multipart = {
        "schema": {
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {
                    "type": "array",
                    "items": _BINARY,
                    "minItems": 1,
                    "maxItems": max_items,
                    "description": f"up to {max_items} files, each one of: {accepted}",
                }
            },
        },
        "encoding": {"file": {"contentType": accepted}},
    }
    return {
        "requestBody": {
            "required": True,
            "description": (
                f"Either a multipart form whose field `file` holds up to {max_items} files "
                f"(`curl -F file=@a -F file=@b`), or one file as the raw body with its media "
                f"type as Content-Type (`curl --data-binary @a -H 'Content-Type: {types[0]}'`). "
                f"Media types: {accepted}."
            ),
            "content": {
                "multipart/form-data": multipart,
                **{t: {"schema": _BINARY} for t in types},
            },
        },
        "responses": {
            "200": {
                "description": f"the {task} model's answer for each input",
                "content": {"application/json": {"schema": ANSWER_SCHEMA}},
            },
            **{
                code: {
                    "description": text,
                    "content": {"application/json": {"schema": ERROR_SCHEMA}},
                }
                for code, text in _ERRORS.items()
            },
        },
    }


def finish(
    schema: dict[str, Any],
    *,
    parameters: Mapping[str, Mapping[str, str]],
    guarded: Iterable[str],
) -> dict[str, Any]:
    """A copy of FastAPI's schema with what is known only at run time: the loaded models'
    query parameters (task -> name -> meaning), and, on a server with a token, the bearer
    scheme on every path in `guarded` (so `/docs` has an Authorize button)."""
    out = copy.deepcopy(schema)
    paths = out.get("paths", {})
    for task, params in parameters.items():
        op = paths.get(f"/v1/{task}", {}).get("post")
        if op is None:
            continue
        op["parameters"] = [
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": meaning,
                "schema": {"type": "string"},
            }
            for name, meaning in params.items()
        ]
    guarded = set(guarded)
    if guarded:
        components = out.setdefault("components", {})
        components.setdefault("securitySchemes", {})[BEARER] = {
            "type": "http",
            "scheme": "bearer",
            "description": "the server's API token (LIVEML_API_TOKEN)",
        }
        for path, ops in paths.items():
            if path in guarded:
                for op in ops.values():
                    op["security"] = [{BEARER: []}]
    return out
