"""A service's log says each thing once: no line per HTTP request, no migration docstrings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.servers  # every test here starts a server or a process

PROGRAM = """
import http.server, sys, threading
import httpx
from linli.catalog.commands import setup_logging
from linli.cloud.db import open_state

setup_logging()
server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
threading.Thread(target=server.handle_request, daemon=True).start()
httpx.get(f"http://127.0.0.1:{server.server_port}/")
open_state(sys.argv[1])
open_state(sys.argv[1])  # already current: nothing to say
"""


def test_requests_and_migrations_leave_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(tmp_path / "state.sqlite")],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if " INFO " in line or " WARNING " in line]
    assert len(lines) == 1, done.stderr
    assert lines[0].endswith("linli.cloud.db: state schema upgraded from empty to " + head())


def head() -> str:
    from linli.cloud.db import MIGRATIONS

    return max(p.name.split("_")[0] for p in (MIGRATIONS / "versions").glob("[0-9]*.py"))
