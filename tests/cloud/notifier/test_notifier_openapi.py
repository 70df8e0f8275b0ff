"""The notifier's OpenAPI document against the API itself: schemathesis generates requests
from the document, valid and invalid, sends them to the running server, and checks every
answer against the document."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from linli.cloud.notifier.api import app
from linli.cloud.notifier.channels import Sender
from linli.cloud.notifier.config import NotifierConfig, SmtpConfig
from linli.cloud.notifier.engine import Notifier
from linli.cloud.notifier.store import Store
from linli.cloud.tokens import TokenBook
from openapi import check_the_document
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


@pytest.mark.slow
def test_every_answer_is_the_one_the_document_promises(base_url: str) -> None:
    check_the_document(base_url, TOKEN, operations=8, examples=EXAMPLES)
