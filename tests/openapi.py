"""An API's OpenAPI document against the API itself, by schemathesis: requests generated from
the document, valid and invalid, sent to the running server, every answer checked against it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import ignored_auth


def check_the_document(
    base_url: str, token: str, *, operations: int, examples: int, excluded: Sequence[Any] = ()
) -> None:
    """Each operation of `base_url`'s document, `examples` cases each (derandomized: the same
    every run, so CI cannot flake); at least `operations` of them; every check but `excluded`."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    found = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the document does not load: {result}"
        found.append(result.ok())
    assert len(found) >= operations
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=10) as client:
        for operation in found:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=examples,
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
                case.validate_response(response, headers=auth, excluded_checks=[ignored_auth, *excluded])

            try:
                run()
            except Exception as exc:
                pytest.fail(f"{operation.label}: {exc}")
