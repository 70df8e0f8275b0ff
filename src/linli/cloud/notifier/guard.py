"""The guard in front of linli's HTTP APIs, and the pieces of an API document they share.

The guard checks the bearer token and its scope before a byte of the body is read (401 for no
token or a wrong or revoked one, 403 for a scope too narrow), and refuses bodies over
`MAX_BODY` bytes with 413, so an anonymous client cannot make a service buffer a large upload.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as ASGIScope

from linli.cloud.docs_page import PATHS as DOCS
from linli.cloud.docs_page import add_docs
from linli.cloud.problems import (
    Problem,
    document_problems,
    http_problem,
    problem_messages,
    problem_response,
    server_problem,
)
from linli.cloud.scope import Scope
from linli.cloud.tokens import ENV_TOKEN, Holder, Needed, TokenBook, needed

# Large enough for any subscription the models allow, small enough to hold in memory.
MAX_BODY = 256 * 1024
# Paths anyone may read: the API's own description.
PUBLIC = frozenset({"/openapi.json", *DOCS})
# PostgreSQL's text holds no NUL character: refused as invalid (422), not failed on (500).
NO_NUL = r"^[^\x00]*$"


class Guard:
    """ASGI middleware: the token and its scope first, then the body's size, then the application.

    The token from the environment may do everything (`admin`); tokens from `book` what their
    scope allows, `need` saying which scope a request needs (the notifier's rules by default).
    Who made the request is left in the request's state as `holder`.
    """

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        public: frozenset[str] = frozenset(),
        book: TokenBook | None = None,
        need: Needed = needed,
    ) -> None:
        self.app = app
        self.need = need
        self.public = PUBLIC | public  # pages that hold no data; what they fetch needs the token
        # Compared as bytes: a header with non-ASCII characters is just a wrong token.
        self.expected = token.encode()
        self.book = book

    def _holder(self, given: bytes) -> Holder | None:
        # The scheme is case-insensitive (RFC 9110); the token is not.
        if given[:7].lower() != b"bearer " or len(given) == 7:
            return None
        token = given[7:]
        if self.expected and secrets.compare_digest(token, self.expected):
            return Holder(ENV_TOKEN, Scope.ADMIN)
        return self.book.holder(token) if self.book is not None else None

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        path: str = scope["path"]
        holder = self._holder(headers.get(b"authorization", b""))
        if holder is None:
            challenge = [(b"www-authenticate", b"Bearer")]
            for message in problem_messages(401, "a valid bearer token is required", path, challenge):
                await send(message)
            return
        wanted = self.need(scope["method"], scope["path"])
        if not holder.scope.allows(wanted):
            detail = f"token '{holder.name}' has scope '{holder.scope}'; this needs '{wanted}'"
            for message in problem_messages(403, detail, path):
                await send(message)
            return
        scope.setdefault("state", {})["holder"] = holder
        length = headers.get(b"content-length", b"0")
        too_large = f"the body may be at most {MAX_BODY} bytes"
        if not length.isdigit() or int(length) > MAX_BODY:
            for message in problem_messages(413, too_large, path):
                await send(message)
            return
        body = await self._read(receive)
        if body is None:
            for message in problem_messages(413, too_large, path):
                await send(message)
            return
        await self.app(scope, _replay(body, receive), send)

    @staticmethod
    async def _read(receive: Receive) -> bytes | None:
        """The whole body, or None once it passes MAX_BODY (a chunked upload has no length)."""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(parts)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def doc(*codes: int) -> dict[int | str, dict[str, Any]]:
    what = {
        409: "the request contradicts itself or the state",
        401: "no token, or a wrong or revoked one",
        403: "the token's scope does not allow this (book < read < ack < admin)",
        404: "no such thing",
        413: f"a body over {MAX_BODY} bytes",
        503: "the state cannot be reached; try again",
    }
    return {code: {"model": Problem, "description": what[code]} for code in codes}


def validation_detail(exc: RequestValidationError) -> str:
    """What the models refused, in a line: each place and why."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


async def invalid(request: Request, exc: Exception, **extra: Any) -> JSONResponse:
    """422 as a problem, with each of the models' refusals in `errors` as FastAPI says them; a NaN
    or infinity the client sent is echoed as text, since JSON has no such number (FastAPI's own
    answer failed there with a 500)."""
    assert isinstance(exc, RequestValidationError)
    errors = _finite(jsonable_encoder(exc.errors()))
    return problem_response(422, validation_detail(exc), request.url.path, errors=errors, **extra)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def guarded(title: str, description: str) -> FastAPI:
    """An API whose document states the bearer scheme and the guard's refusals (wrap it in Guard)."""
    api = FastAPI(
        title=title,
        version="1",
        description=description,
        docs_url=None,  # served from this package by `add_docs`, not from a CDN
        redoc_url=None,
        responses=doc(401, 403, 413),
        # Only for the document's security scheme: the Guard checks the token, before the body.
        dependencies=[Depends(HTTPBearer(auto_error=False))],
        exception_handlers={
            RequestValidationError: invalid,
            StarletteHTTPException: http_problem,
            Exception: server_problem,
        },
    )
    document_problems(api)
    add_docs(api)
    return api
