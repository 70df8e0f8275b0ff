"""The notifier's OpenAPI document against the API itself: schemathesis generates requests
from the document, valid and invalid, sends them to the running server, and checks every
answer against the document."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import ignored_auth

from linli.cloud.notifier.api import app
from linli.cloud.notifier.channels import Sender
from linli.cloud.notifier.config import NotifierConfig, SmtpConfig
from linli.cloud.notifier.engine import Notifier
from linli.cloud.notifier.store import Store
from linli.cloud.tokens import TokenBook
from support import serving

TOKEN = "schema-s3cret"  # noqa: S105 (the test's own)
# Cases per operation: bounded, and the same every run (derandomized), so CI cannot flake.
EXAMPLES = 100


@pytest.fixture
def base_url(state: str) -> Iterator[str]:
    """The notifier's API served by uvicorn on a free port, as `linli cloud run` serves it."""
    config = NotifierConfig.model_validate({"state": state})
    notifier = Notifier(config, Store(config.state), Sender(SmtpConfig()), time.time)
    with serving(app(notifier, TOKEN, TokenBook(config.state))) as base:
        yield base


def test_every_answer_is_the_one_the_document_promises(base_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the document does not load: {result}"
        operations.append(result.ok())
    assert len(operations) >= 8
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(timeout=10) as client:
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES,
                derandomize=True,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                kwargs = case.as_transport_kwargs(base_url=base_url, headers=auth)
                response = client.request(
                    kwargs["method"],
                    kwargs["url"],
                    params=kwargs.get("params"),
                    headers=kwargs.get("headers"),
                    json=kwargs.get("json"),
                    content=kwargs.get("data"),
                )
                # ignored_auth sends probes of its own through requests, whose urllib3 another
                # dependency replaces here; the token's checks are tested in test_notifier_hostile.
                case.validate_response(response, headers=auth, excluded_checks=[ignored_auth])

            try:
                run()
            except Exception as exc:
                pytest.fail(f"{operation.label}: {exc}")
