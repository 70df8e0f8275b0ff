"""InfluxQL over HTTP: the /query API of InfluxDB 1.x, and of 2.x through its v1 compatibility.

Grafana fills in `$timeFilter`, `$__interval` and the variables before it sends a panel's
query; `expand` does the same, so that tests and the rendered picture run each query as
Grafana would.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

_VARIABLE = re.compile(r"/\^\$(\w+)\$/")


class QueryError(Exception):
    """The store refused a query; the message has its reason and the query."""


@dataclass(frozen=True)
class Series:
    """One series of a result: its tags, column names and rows."""

    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]] = field(default_factory=list)

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [row[i] for row in self.values]


def expand(
    query: str, start_ms: int, end_ms: int, interval: str = "1m", variables: dict[str, str] | None = None
) -> str:
    """The query as Grafana sends it: the time range, the interval, and each variable as a regex."""
    variables = variables or {}
    text = query.replace("$timeFilter", f"time >= {start_ms}ms AND time <= {end_ms}ms")
    text = text.replace("$__interval", interval)
    # A multi-value variable becomes an alternation; All matches anything.
    return _VARIABLE.sub(lambda m: f"/^{re.escape(variables[m[1]]) if m[1] in variables else '.*'}$/", text)


def authorization(token: str) -> str:
    """The Authorization header for a store's credentials: InfluxDB 1.x's `user:password` as
    HTTP Basic, which every 1.x answers (1.8 also takes it as `Token user:password`, which
    Debian's 1.6 refuses); an InfluxDB 2 API token as `Token`."""
    if ":" in token:
        return "Basic " + base64.b64encode(token.encode()).decode()
    return f"Token {token}"


def run(
    url: str, database: str, query: str, *, token: str | None = None, timeout: float = 30.0
) -> list[Series]:
    """Every series the query returns (none is an empty list); raise QueryError when refused."""
    if not url.startswith(("http://", "https://")):
        raise QueryError(f"not an HTTP URL: {url}")
    params = urllib.parse.urlencode({"db": database, "q": query, "epoch": "ms"})
    endpoint = f"{url.rstrip('/')}/query"
    request = urllib.request.Request(endpoint, data=params.encode(), method="POST")  # noqa: S310 (checked above)
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    if token:
        request.add_header("Authorization", authorization(token))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (checked above)
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        raise QueryError(f"{exc.code} {exc.read().decode(errors='replace')[:300]} for: {query}") from exc
    result = body["results"][0]
    if "error" in result:
        raise QueryError(f"{result['error']} for: {query}")
    return [
        Series(s.get("name", ""), s.get("tags") or {}, s["columns"], s.get("values") or [])
        for s in result.get("series", [])
    ]
