"""Every refusal of the notifier's and the waste service's APIs as RFC 9457 problem details.

An error's body is `application/problem+json`: `type` (`about:blank`: the status says it all),
`title` (the status's phrase), `status`, `detail` (what was wrong, for a person) and `instance`
(the path asked for); a refusal may add members of its own (`errors` for a request the models
refuse, `code` for a booking's). The OpenAPI document says so for every error it lists.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.types import Message

PROBLEM = "application/problem+json"
REF = {"$ref": "#/components/schemas/Problem"}


class Problem(BaseModel):
    """What went wrong (RFC 9457 problem details)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field("about:blank", description="a URI naming the kind of problem; about:blank: the status")
    title: str = Field(description="the status's phrase, e.g. Not Found")
    status: int
    detail: str = Field(description="what was wrong, for a person")
    instance: str = Field(description="the path asked for")


def problem(status: int, detail: str, instance: str, **extra: Any) -> dict[str, Any]:
    """The body of a problem."""
    title = HTTPStatus(status).phrase
    found = {"type": "about:blank", "title": title, "status": status, "detail": detail, "instance": instance}
    return found | extra


def problem_response(
    status: int, detail: str, instance: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(
        problem(status, detail, instance, **extra), status, headers=headers, media_type=PROBLEM
    )


def problem_messages(
    status: int, detail: str, instance: str, headers: list[tuple[bytes, bytes]] | None = None
) -> list[Message]:
    """A problem as the ASGI messages of a whole answer (for middleware, before the app)."""
    body = json.dumps(problem(status, detail, instance)).encode()
    head = [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(body)).encode())]
    return [
        {"type": "http.response.start", "status": status, "headers": head + (headers or [])},
        {"type": "http.response.body", "body": body},
    ]


async def http_problem(request: Request, exc: Exception) -> JSONResponse:
    """An HTTPException (the app's own, or Starlette's 404 and 405) as a problem."""
    assert isinstance(exc, HTTPException)
    return problem_response(exc.status_code, str(exc.detail), request.url.path, dict(exc.headers or {}))


async def server_problem(request: Request, _exc: Exception) -> JSONResponse:
    """An error the app did not expect: a problem, the traceback in the log only."""
    return problem_response(500, "the server failed on this request; it is in its log", request.url.path)


def document_problems(api: FastAPI) -> None:
    """The OpenAPI document says every error answer is a problem, as `application/problem+json`."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            found = get_openapi(
                title=api.title, version=api.version, description=api.description, routes=api.routes
            )
            schemas = found.setdefault("components", {}).setdefault("schemas", {})
            schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            for path in found.get("paths", {}).values():
                for operation in path.values():
                    for code, answer in operation.get("responses", {}).items():
                        if code[0] in "45":
                            answer["content"] = {PROBLEM: {"schema": REF}}
            api.openapi_schema = found
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way
