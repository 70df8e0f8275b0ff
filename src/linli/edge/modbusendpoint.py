"""One Modbus TCP connection, shared by the devices behind a gateway, and what a failed request was.

The connection is opened on demand and reopened with backoff after a failure; the bytes of
the request under way and of its answer are kept, so that a failure is filed under why it
failed (see modbusfailure).
"""

from __future__ import annotations

import asyncio
import socket
import time

from pymodbus.client import AsyncModbusTcpClient

from linli.edge.backoff import Backoff
from linli.edge.modbusfailure import classify
from linli.edge.registerpdu import RESPONSES

MODBUS_EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


class PollError(Exception):
    """A poll that got no usable answer; `reason` is the counter it is filed under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Endpoint:
    """One TCP connection to a device or gateway, shared by the devices behind it."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | None = None
        self._backoff = Backoff(initial=0.5, maximum=30.0)
        self._next_connect = 0.0
        # The bytes of the request under way and of its answer, to tell why it failed.
        self._sent = b""
        self._received = bytearray()
        self._closed = False

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    async def client(self) -> AsyncModbusTcpClient:
        """A connected client, or PollError while the endpoint is unreachable."""
        if self._client is not None and self._client.connected:
            return self._client
        now = time.monotonic()
        if now < self._next_connect:
            # Only a failed connect starts this backoff; count the wait under the same reason.
            raise PollError(
                "refused",
                f"{self.name}: connection failed, retrying in {self._next_connect - now:.1f}s",
            )
        # A name that does not resolve is not a refusal: the technician's fix differs.
        try:
            await asyncio.get_running_loop().getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            self._next_connect = time.monotonic() + self._backoff.next_delay()
            raise PollError("unresolved", f"{self.name}: the host name does not resolve ({exc})") from exc
        # pymodbus reconnects on its own unless told not to; linli owns the backoff here.
        client = AsyncModbusTcpClient(
            self.host,
            port=self.port,
            timeout=self.timeout,
            retries=0,
            reconnect_delay=0,
            trace_packet=self._trace,
            trace_connect=self._trace_connect,
        )
        for response in RESPONSES:
            client.register(response)
        if not await client.connect():
            client.close()
            self._next_connect = time.monotonic() + self._backoff.next_delay()
            raise PollError("refused", f"{self.name}: connection refused or unreachable")
        self._backoff.reset()
        self._client = client
        return client

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self._sent = data
            self._received.clear()
            self._closed = False
        else:
            self._received += data
        return data

    def _trace_connect(self, connected: bool) -> None:
        if not connected:
            self._closed = True

    def failure(self) -> tuple[str, str]:
        """(reason, detail) for the request that just failed, from what went over the wire."""
        return classify(self._sent, bytes(self._received), closed=self._closed)

    def reset(self) -> None:
        """Drop the connection (after a timeout its transaction ids can no longer be trusted)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        self.reset()
