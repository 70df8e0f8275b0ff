"""The notifier's real peers in the tests: an HTTP receiver that answers like the robots, an SMTP inbox."""

from __future__ import annotations

import email
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def answer(handler: BaseHTTPRequestHandler, content_type: str, body: bytes) -> None:
    """200 with `body`."""
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class Receiver:
    """An HTTP server that keeps every POST, answering robots the way they answer."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                receiver.posts.append((self.path, json.loads(self.rfile.read(length))))
                answer(self, "application/json", b'{"errcode": 0, "errmsg": "ok"}')

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def at(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in list(self.posts) if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Site:
    """Another origin (a port of its own) serving one HTML page at every path: a hostile site."""

    def __init__(self, html: str) -> None:
        page = html.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                answer(self, "text/html", page)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Inbox:
    """aiosmtpd's handler: every message accepted."""

    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, _server: object, _session: object, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


LATE_S = 6.0


class SlowReceiver:
    """An HTTP server that takes every POST and then never finishes its answer: "trickle" sends
    the status line and then its body a byte a second, "hang" never says a word; or "late",
    which answers whole after `LATE_S` (past httpx's own 5 s default timeout)."""

    def __init__(self, mode: str) -> None:
        self.posts: list[str] = []
        self.stopping = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append(self.path)
                if mode == "late":
                    # The receiver's own pace, as slow as a loaded robot service's: not a sync.
                    if not receiver.stopping.wait(LATE_S):
                        answer(self, "application/json", b'{"errcode": 0, "errmsg": "ok"}')
                    return
                if mode == "trickle":
                    self.send_response(200)
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    self.wfile.flush()
                # The receiver's own pace, not the test's synchronisation: a byte a second.
                while not receiver.stopping.wait(1.0):
                    if mode == "trickle":
                        self.wfile.write(b" ")
                        self.wfile.flush()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
