"""Faults on demand while the district runs: `POST /faults` on a loopback port of its own.

The body is one fault as `--fault` takes it (`ronghua-1/station-2:smoke`, `fleet/truck-dry-north:blocked`,
`ronghua-1:offline`); the answer is the devices it hit, as JSON, or 400 with why it hit none. The
fault is applied in the simulator's event loop, between two ticks, never halfway through one.
"""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from linli.sim.district import District, FaultSpec, MqttPublisher

MAX_BODY = 1000
ANSWER_S = 30.0  # a loaded machine's event loop may be busy for a while


class FaultControl:
    """The district's control endpoint on 127.0.0.1:`port` (0: a free one), in a thread."""

    def __init__(
        self, district: District, publisher: MqttPublisher | None, loop: asyncio.AbstractEventLoop, port: int
    ) -> None:
        control = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # the simulator's output says what it does

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if self.path != "/faults" or length > MAX_BODY:
                    self._send(404, {"error": "POST /faults with TARGET:NAME"})
                    return
                text = self.rfile.read(length).decode("utf-8", "replace").strip()
                try:
                    hit = control.strike(text)
                except ValueError as exc:
                    self._send(400, {"error": str(exc)})
                    return
                self._send(200, {"fault": text, "devices": hit})

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.district = district
        self.publisher = publisher
        self.loop = loop
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.struck: list[str] = []
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="linli-sim-control", daemon=True
        )

    def strike(self, text: str) -> list[str]:
        """Apply one fault in the event loop; the devices hit, or ValueError."""
        fault = FaultSpec.parse(text)

        async def apply() -> list[str]:
            return self.district.strike(fault, self.publisher)

        hit = asyncio.run_coroutine_threadsafe(apply(), self.loop).result(ANSWER_S)
        self.struck.append(text)
        print(f"linli sim district: fault {text} on {', '.join(hit)}", flush=True)
        return hit

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
