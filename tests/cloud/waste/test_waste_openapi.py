"""The waste service's OpenAPI document against the API itself (see openapi.py): its problems,
its pages, every answer the one the document promises."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from schemathesis.specs.openapi.checks import positive_data_acceptance

from linli.cloud.waste.api import app
from linli.cloud.waste.config import WasteConfig
from linli.cloud.waste.service import WasteService
from linli.transit.gtfs import load_feed
from openapi import check_the_document
from support import serving
from test_waste_service import FEED

TOKEN = "schema-s3cret"  # noqa: S105 (the test's own)
EXAMPLES = 50


@pytest.fixture
def base_url(tmp_path: Path) -> Iterator[str]:
    """The waste service's API served by uvicorn on a free port, as `linli waste run` serves it."""
    config = WasteConfig(gtfs=FEED, state=str(tmp_path / "waste.sqlite"))
    with serving(app(WasteService(config, TOKEN, load_feed(FEED)).engine, TOKEN)) as base:
        yield base


@pytest.mark.slow
def test_every_answer_is_the_one_the_document_promises(base_url: str) -> None:
    # A booking's model checks more than its JSON Schema can say (a contact needs a phone, an
    # e-mail or a WeCom id; the window's ends in order), so a request the schema allows may be
    # refused with 422: the answer is still checked against the document, only not required 2xx.
    check_the_document(base_url, TOKEN, operations=10, examples=EXAMPLES, excluded=[positive_data_acceptance])
