"""Every response of the notifier's API carries its protective headers, and the API's
documentation loads nothing from another site (the waste API's, and the pages in Chromium:
`test_booking_page.py`)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from linli.cloud.notifier.api import app
from linli.cloud.notifier.channels import Sender
from linli.cloud.notifier.config import NotifierConfig, SmtpConfig
from linli.cloud.notifier.engine import Notifier
from linli.cloud.notifier.store import Store
from linli.cloud.tokens import TokenBook
from support import protective_headers, serving

TOKEN = "headers-s3cret"  # noqa: S105 (the test's own)


def test_every_notifier_response_carries_the_protective_headers(tmp_path: Path) -> None:
    state = str(tmp_path / "notifier.sqlite")
    notifier = Notifier(NotifierConfig(state=state), Store(state), Sender(SmtpConfig()), time.time)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serving(app(notifier, TOKEN, TokenBook(state))) as base:
        answers = {
            (path, bool(headers)): httpx.get(base + path, headers=headers, timeout=10)
            for path, headers in [
                ("/openapi.json", {}),
                ("/docs", {}),
                ("/docs/swagger-ui-bundle.js", {}),
                ("/docs/start.js", {}),
                ("/docs/no-such-file", {}),
                ("/favicon.ico", {}),
                ("/redoc", {}),
                ("/alerts", {}),  # no token: 401
                ("/alerts", auth),
                ("/health", auth),
                ("/no-such-path", auth),
            ]
        }
        posted = httpx.post(base + "/subscriptions", headers=auth, content=b"{", timeout=10)  # 422
    codes = {key: r.status_code for key, r in answers.items()}
    assert codes == {
        ("/openapi.json", False): 200,
        ("/docs", False): 200,
        ("/docs/swagger-ui-bundle.js", False): 200,
        ("/docs/start.js", False): 200,
        ("/docs/no-such-file", False): 401,  # only the assets are public
        ("/favicon.ico", False): 200,  # every browser asks for it
        ("/redoc", False): 401,  # not served: ReDoc's files come from no package
        ("/alerts", False): 401,
        ("/alerts", True): 200,
        ("/health", True): 200,
        ("/no-such-path", True): 404,
    }
    for key, response in [*answers.items(), (("POST /subscriptions", True), posted)]:
        assert protective_headers(response.headers) == {}, key
    assert answers[("/favicon.ico", False)].content.startswith(b"\x89PNG")
    page = answers[("/docs", False)].text
    assert re.findall(r"(?:src|href)=\"([^\"]+)\"", page) == [
        "/docs/swagger-ui.css",
        "/docs/favicon-32x32.png",
        "/docs/swagger-ui-bundle.js",
        "/docs/start.js",
    ]  # nothing from a CDN
    assert "<script>" not in page  # no inline script: the page's policy allows none
