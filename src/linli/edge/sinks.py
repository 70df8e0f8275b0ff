"""Sinks: send a batch of line-protocol lines to one time-series store, or raise WriteError."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import urlencode

import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from linli.edge.config import WriterConfig, WriterKind


class WriteError(Exception):
    """A write the store did not confirm. `retryable` says whether sending it again can help."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    @property
    def setup(self) -> bool:
        """The store is missing its database or bucket, or refuses the credentials.

        That is an outage to fix on the store's side, not bad data: the lines stay buffered.
        """
        return self.status in (401, 403, 404)

    @property
    def retryable(self) -> bool:
        # No status: the store is unreachable. 429 and 5xx: it is overloaded or down. 401, 403
        # and 404: it is not set up for us yet. 413 is retryable too, after the batch is split.
        # 400 and 422 are not: the lines themselves are refused.
        return self.status is None or self.setup or self.status in (408, 413, 429) or self.status >= 500


class Sink(Protocol):
    """Where a batch goes."""

    target: str

    def write(self, body: bytes) -> None:
        """Write a body of newline-separated lines, all of them, or raise WriteError."""

    def check(self) -> None:
        """Ask the store whether it would take our writes (an empty write); WriteError if not."""

    def close(self) -> None:
        """Release connections."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _body_text(body: object) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    return text.strip()[:300]


class InfluxV2Sink:
    """The v2 write API through influxdb-client: InfluxDB 2.x and 3.x, VictoriaMetrics."""

    def __init__(self, config: WriterConfig) -> None:
        self.target = f"{config.url} bucket={config.bucket}"
        self._bucket = config.bucket
        self._org = config.org
        # No retries inside the client: linli's writer retries and keeps what failed.
        self._client = InfluxDBClient(
            url=config.url,
            token=config.token or "linli",
            org=config.org,
            timeout=int(config.timeout * 1000),
            retries=False,
        )
        self._api = self._client.write_api(write_options=SYNCHRONOUS)
        query = urlencode({"org": config.org, "bucket": config.bucket, "precision": "ms"})
        self._check_url = f"{config.url.rstrip('/')}/api/v2/write?{query}"
        self._check_headers = {"Authorization": f"Token {config.token or 'linli'}"}
        self._timeout = config.timeout

    def write(self, body: bytes) -> None:
        try:
            self._api.write(
                bucket=self._bucket,
                org=self._org,
                record=body,
                write_precision=WritePrecision.MS,  # type: ignore[arg-type]  # a str constant
            )
        except ApiException as exc:
            headers: Mapping[str, str] = exc.headers or {}
            raise WriteError(
                f"{self.target}: HTTP {exc.status} {_body_text(exc.body)}",
                status=exc.status,
                retry_after=parse_retry_after(headers.get("Retry-After")),
            ) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise WriteError(f"{self.target}: unreachable ({type(exc).__name__})") from exc

    def check(self) -> None:
        # The client skips an empty write; the API itself answers it after checking the bucket.
        with urllib3.PoolManager(timeout=urllib3.Timeout(total=self._timeout), retries=False) as http:
            _post(http, self.target, self._check_url, b"", self._check_headers)

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]


class InfluxV1Sink:
    """InfluxDB 1.x's /write endpoint, with the same line protocol."""

    def __init__(self, config: WriterConfig) -> None:
        params = {"db": config.database, "precision": "ms"}
        self.target = f"{config.url} db={config.database}"
        self._url = f"{config.url.rstrip('/')}/write?{urlencode(params)}"
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if config.token:
            self._headers["Authorization"] = f"Token {config.token}"
        elif config.username:
            self._headers.update(urllib3.make_headers(basic_auth=f"{config.username}:{config.password}"))
        self._http = urllib3.PoolManager(timeout=urllib3.Timeout(total=config.timeout), retries=False)

    def write(self, body: bytes) -> None:
        _post(self._http, self.target, self._url, body, self._headers)

    def check(self) -> None:
        # InfluxDB 1.x answers an empty write after looking up the database and the user.
        self.write(b"")

    def close(self) -> None:
        self._http.clear()


def _post(http: urllib3.PoolManager, target: str, url: str, body: bytes, headers: Mapping[str, str]) -> None:
    try:
        resp = http.request("POST", url, body=body, headers=dict(headers))
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise WriteError(f"{target}: unreachable ({type(exc).__name__})") from exc
    if resp.status >= 300:
        raise WriteError(
            f"{target}: HTTP {resp.status} {_body_text(resp.data)}",
            status=resp.status,
            retry_after=parse_retry_after(resp.headers.get("Retry-After")),
        )


def make_sink(config: WriterConfig) -> Sink:
    """The sink for the configured store."""
    if config.kind is WriterKind.INFLUXDB1:
        return InfluxV1Sink(config)
    return InfluxV2Sink(config)
