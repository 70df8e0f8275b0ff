"""What the benchmarks share: a process's CPU time, the charger simulator, the broker's limits,
a webhook that takes the notifier's notices."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def machine() -> str:
    """The machine a benchmark ran on, for its figures."""
    return (
        f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used, from /proc."""
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def start_charger_sim(first_port: int, stations: int, *extra: str) -> subprocess.Popen[str]:
    """`linli sim charger` serving `stations` from `first_port` on, once every station listens."""
    argv = ["sim", "charger", "--port", str(first_port), "--stations", str(stations), *extra]
    sim = subprocess.Popen(
        [sys.executable, "-m", "linli.cli", *argv],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sim.stdout is not None
    if "linli sim" not in sim.stdout.readline():  # it says so once every station listens
        sim.wait()
        raise SystemExit("benchmark: the simulator did not start; see its error above")
    return sim


def start_notifier(config: Path, token: str, *, before: str = "") -> subprocess.Popen[bytes]:
    """`linli cloud run --config CONFIG` (its output in CONFIG.log), once its API listens, with
    its API's token; `before`: Python run first in its process (to put back older behaviour)."""
    log = config.with_suffix(".log")
    code = f"import sys; {before}from linli.cli.main import main; sys.exit(main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "cloud", "run", "--config", str(config)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=os.environ | {"LINLI_CLOUD_TOKEN": token},
    )
    deadline = time.monotonic() + 60
    while "notifier: API on" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"benchmark: the notifier did not start; see {log}")
        time.sleep(0.1)
    return proc


class Webhook:
    """A local HTTP server handing each POSTed JSON body, with the time it arrived, to `take`.

    It keeps connections open (HTTP/1.1) and queues connections as a web server does: with
    Python's defaults (HTTP/1.0, a backlog of 5) every notice was a new connection, and a
    burst of them overflowed the backlog, each dropped SYN costing the sender a second.
    """

    def __init__(self, take: Callable[[dict[str, Any], float], None]) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                arrived = time.time()
                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                except ValueError:  # a sender that gave up halfway: it sends again
                    self.send_response(400)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                take(body, arrived)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
