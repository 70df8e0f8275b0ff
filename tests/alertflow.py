"""What the notifier tests of several processes share: an edge whose alerts flow through the
broker, and a webhook that keeps every notice with the time it arrived."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from linli.edge.alerting import Alerting
from linli.edge.config import EdgeConfig


class _Server(ThreadingHTTPServer):
    # Services deliver to it several at once: a listen queue of 5 (the default) dropped their
    # connections, each then waiting seconds to connect, as a real gateway never makes them.
    request_queue_size = 128
    daemon_threads = True


class Hook:
    """The webhook on the broker's host: every notice with the time it arrived."""

    def __init__(self, host: str) -> None:
        self.got: list[tuple[dict[str, Any], float]] = []
        self.paths: list[str] = []  # of each in `got`
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.time()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with hook.lock:  # the handler's threads: `paths` in step with `got`
                    hook.paths.append(self.path)
                    hook.got.append((body, arrived))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = _Server((host, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://{host}:{self.server.server_address[1]}"
        self.url = f"{self.base}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Edge:
    """linli's alerting on its own loop: readings in, events and announcements out to the broker."""

    def __init__(self, broker: int, *, devices: int, resend_s: float, site: str = "hosts") -> None:
        config = EdgeConfig.model_validate(
            {
                "agent": {"name": f"{site}-edge"},
                "writer": {"kind": "influxdb2", "url": "http://127.0.0.1:9", "org": "o", "bucket": "b"},
                "alerts": {"host": "127.0.0.1", "port": broker, "resend_s": resend_s},
                "sites": [
                    {
                        "id": site,
                        "devices": [{"id": f"rescue-{i}", "profile": "rescue_point"} for i in range(devices)],
                    }
                ],
            }
        )
        self.site = site
        self.alerting = Alerting(config, lambda _lines: None)
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),), daemon=True)
        self.thread.start()

    async def _run(self) -> None:
        await self.alerting.run(self.stop)

    def battery(self, device: int, percent: float) -> None:
        def observe() -> None:
            self.alerting.observe(
                "rescue_point", {"site": self.site, "device": f"rescue-{device}"}, {"aed_battery": percent},
                int(time.time() * 1000),
            )  # fmt: skip

        self.loop.call_soon_threadsafe(observe)

    def settle(self) -> None:
        """Wait until the loop has taken every reading given so far (its callbacks run in order)."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.loop.call_soon_threadsafe(done.set_result, None)
        done.result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


class GroupRobot:
    """A WeCom or DingTalk group robot on loopback, as strict as the real one: a body over
    `max_bytes` refused (DingTalk's errcode 460101), a message past its `per` a minute (a test
    is shorter than the robot's minute) answered with the kind's throttling code, and so are its
    first `throttle` messages."""

    def __init__(self, kind: str, *, per: int = 20, throttle: int = 0, max_bytes: int = 20_000) -> None:
        self.taken: list[tuple[str, int]] = []  # (the markdown text, the body's bytes)
        self.refused: list[int] = []  # the errcode of each refusal
        self.lock = threading.Lock()
        throttling = {"wecom": 45009, "dingtalk": 130101}[kind]
        robot = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                markdown = json.loads(data)["markdown"]
                text = markdown.get("content", markdown.get("text", ""))
                with robot.lock:
                    recent = len(robot.taken) + len(robot.refused) < throttle
                    code = (
                        460101 if len(data) > max_bytes
                        else throttling if recent or len(robot.taken) >= per
                        else 0
                    )  # fmt: skip
                    if code:
                        robot.refused.append(code)
                    else:
                        robot.taken.append((text, len(data)))
                answer = json.dumps({"errcode": code, "errmsg": "refused" if code else "ok"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: object) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/robot/send?access_token=t"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
