"""Protective headers on every response of the notifier's and the waste service's APIs.

Each response says: never frame me (`frame-ancestors 'none'`, `X-Frame-Options: DENY`: the
booking page carries its token and has a Cancel button a hostile site must not overlay),
never guess my type (`nosniff`), and send no referrer. A response gets a Content-Security-
Policy that lets nothing load unless its route set one that fits its page (`page_csp`).
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# JSON and errors: nothing in them may run or load anything.
API_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
FIXED = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def page_csp(html: str, *, styles: str = "", images: str = "'self'") -> str:
    """The policy of a page of our own: its inline scripts and styles by their hashes (nothing
    else inline runs), everything else from this origin only, never framed."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for tag, body in INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        hashes[tag].append(f"'sha256-{digest}'")
    return "; ".join(
        [
            "default-src 'none'",
            " ".join(["script-src 'self'", *hashes["script"]]),
            " ".join(["style-src 'self'", *hashes["style"], *([styles] if styles else [])]),
            f"img-src {images}",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


class Protect:
    """ASGI middleware: the fixed headers on every HTTP response, and `API_CSP` where the
    application set no Content-Security-Policy of its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def protected(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in dict(FIXED)]
                if not any(k.lower() == b"content-security-policy" for k, _ in headers):
                    headers.append((b"content-security-policy", API_CSP.encode()))
                message = {**message, "headers": headers + FIXED}
            await send(message)

        await self.app(scope, receive, protected)
