"""Start Debian's real servers on free loopback ports, for the demo, tests and benchmarks.

Each server gets its own data folder and port and is stopped by `stop()`. A missing
binary raises ServerMissingError with the command that installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

APT_PACKAGES = {
    "victoria-metrics": "victoria-metrics",
    "influxd": "influxdb",
    "mosquitto": "mosquitto",
    "mbpoll": "mbpoll",
    "mosquitto_sub": "mosquitto-clients",
}


class ServerMissingError(RuntimeError):
    """A server binary that is not installed."""


class ServerStartError(RuntimeError):
    """A server that did not come up; the message has the end of its log."""


def require_binary(name: str) -> str:
    """The binary's path, or ServerMissingError saying how to install it."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        package = APT_PACKAGES.get(name, name)
        raise ServerMissingError(
            f"'{name}' is not installed; install it with: apt-get update && apt-get install -y {package}"
        )
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port_range(count: int, attempts: int = 50) -> int:
    """The first of `count` consecutive free ports on 127.0.0.1 (for one simulator per port).

    They lie below the kernel's ephemeral range: a simulator restarting on its ports would
    otherwise find one taken by a client's outgoing connection (the agent reconnecting).
    """
    low, _ = _ephemeral_range()
    for _ in range(attempts):
        first = random.randrange(10_000, max(10_001, low - count))
        if first + count > 65535:
            continue
        sockets = []
        try:
            for port in range(first, first + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return first
    raise OSError(f"no {count} consecutive free ports found on 127.0.0.1")


@dataclass
class LocalServer:
    """A running server process."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    datadir: Path
    log_path: Path
    # PostgreSQL takes SIGTERM as "when every client has gone"; SIGINT is its fast shutdown.
    stop_signal: int = signal.SIGTERM
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 10.0) -> None:
        """`stop_signal`, then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _spawn(name: str, argv: list[str], datadir: Path, port: int, *, user: str | None = None) -> LocalServer:
    """Start `argv` in `datadir`, its output in `<name>.log`; as `user` when given (and root)."""
    datadir.mkdir(parents=True, exist_ok=True)
    log_path = datadir / f"{name}.log"
    with log_path.open("wb") as log:
        if user is not None:
            shutil.chown(log_path, user)
        # A session of its own: a terminal's Ctrl-C goes to the whole foreground process group,
        # and the server must outlive the agent that is still flushing to it.
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=datadir, start_new_session=True, user=user
        )
    return LocalServer(name, proc, port, datadir, log_path)


def _wait_ready(
    server: LocalServer, path: str | None, timeout: float = 30.0, *, probe: Callable[[], bool] | None = None
) -> None:
    """Poll until the server answers: `probe()` is true, else HTTP `path`, or a TCP connect when None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise ServerStartError(
                f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}"
            )
        try:
            if probe is not None:
                if probe():
                    return
            elif path is None:
                with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                    return
            else:
                with urllib.request.urlopen(server.url + path, timeout=1) as resp:  # noqa: S310
                    if resp.status < 300:
                        return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    server.stop()
    raise ServerStartError(f"{server.name} did not answer within {timeout:.0f}s:\n{server.log_tail()}")


def wait_listening(server: LocalServer, timeout: float = 60.0) -> None:
    """Until the server accepts a TCP connection on its port; ServerStartError if it exits first."""
    _wait_ready(server, None, timeout)


def start_victoria_metrics(datadir: Path, port: int | None = None) -> LocalServer:
    """VictoriaMetrics single node: accepts the v2 write API and /write."""
    binary = require_binary("victoria-metrics")
    port = port or free_port()
    server = _spawn(
        "victoria-metrics",
        [
            binary,
            f"-storageDataPath={datadir / 'data'}",
            f"-httpListenAddr=127.0.0.1:{port}",
            "-retentionPeriod=100y",
            # Points become searchable at once instead of after 30 s.
            "-search.latencyOffset=0s",
        ],
        datadir,
        port,
    )
    _wait_ready(server, "/health")
    return server


def start_influxdb1(
    datadir: Path, port: int | None = None, max_body_size: int = 25_000_000, *, auth: bool = False
) -> LocalServer:
    """InfluxDB 1.x with its real InfluxQL engine, HTTP on `port`; restart it on the same datadir and port.

    `max_body_size`: larger writes are refused with 413, as InfluxDB does (default 25 MB).
    `auth`: users and grants are enforced (the first user made must be an admin).
    """
    binary = require_binary("influxd")
    port = port or free_port()
    rpc_port = free_port()
    config = datadir / "influxdb.conf"
    datadir.mkdir(parents=True, exist_ok=True)
    config.write_text(
        f"""reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{datadir / "meta"}"
[data]
  dir = "{datadir / "data"}"
  wal-dir = "{datadir / "wal"}"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
  max-body-size = {max_body_size}
  auth-enabled = {"true" if auth else "false"}
""",
        encoding="utf-8",
    )
    server = _spawn("influxdb", [binary, "-config", str(config)], datadir, port)
    _wait_ready(server, "/ping")
    return server


def start_mosquitto_with(datadir: Path, config: Path, port: int, *, as_written: bool = False) -> LocalServer:
    """Mosquitto with a config of its own (`linli broker config`'s), listening on `port`.

    `as_written` runs that config itself, as an operator would: as root, Mosquitto then drops
    to its own user, who must reach every file it names (not in pytest's private folders).
    """
    binary = require_binary("mosquitto")
    datadir.mkdir(parents=True, exist_ok=True)
    if as_written:
        server = _spawn("mosquitto", [binary, "-c", str(config)], datadir, port)
        _wait_ready(server, None)
        return server
    text = config.read_text(encoding="utf-8")
    if os.geteuid() == 0:
        # As root, Mosquitto would drop to its own user, which cannot read a test's private files.
        text += "user root\n"
    run = datadir / "mosquitto.conf"
    run.write_text(text, encoding="utf-8")
    server = _spawn("mosquitto", [binary, "-c", str(run)], datadir, port)
    _wait_ready(server, None)
    return server


def start_mosquitto(
    datadir: Path, port: int | None = None, extra_config: str = "", *, persistence: bool = False
) -> LocalServer:
    """Mosquitto on 127.0.0.1 only, anonymous access (tests run on loopback).

    With `persistence`, sessions and queued messages are saved in `datadir` when it stops
    and restored when it starts again there.
    """
    binary = require_binary("mosquitto")
    port = port or free_port()
    datadir.mkdir(parents=True, exist_ok=True)
    config = datadir / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        + (f"persistence true\npersistence_location {datadir}/\n" if persistence else "persistence false\n")
        # Started as root, Mosquitto would drop to its own user, which cannot save or read
        # certificates in a test's private temporary folder.
        + ("user root\n" if os.geteuid() == 0 else "")
        + extra_config,
        encoding="utf-8",
    )
    server = _spawn("mosquitto", [binary, "-c", str(config)], datadir, port)
    _wait_ready(server, None)
    return server


def _postgresql_bin(name: str) -> str:
    """A PostgreSQL program from Debian's versioned folder (not on PATH), the newest version."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise ServerMissingError(
            f"PostgreSQL's '{name}' is not installed; install it with: "
            "apt-get update && apt-get install -y postgresql"
        )
    return str(found[-1])


def start_postgresql(
    datadir: Path,
    port: int | None = None,
    *,
    init: bool = True,
    host: str = "127.0.0.1",
    netns: str | None = None,
    clients: str | None = None,
) -> LocalServer:
    """PostgreSQL on `host` trusting the user `linli` (tests run on loopback); restart it on
    the same datadir and port with `init=False`. `postgresql_url(server)` is how to reach it.

    For a test of several hosts it runs in the network namespace `netns` and trusts the
    network `clients` (CIDR) as well. PostgreSQL refuses to run as root: as root the cluster
    belongs to the `postgres` user.
    """
    initdb, postgres = _postgresql_bin("initdb"), _postgresql_bin("postgres")
    port = port or free_port()
    cluster = datadir / "cluster"
    user = "postgres" if os.geteuid() == 0 else None
    if init:
        datadir.mkdir(parents=True, exist_ok=True)
        cluster.mkdir()
        if user is not None:
            # The user must reach the cluster through every folder above it.
            for folder in (datadir, *datadir.parents):
                if folder == Path("/"):
                    break
                folder.chmod(folder.stat().st_mode | 0o011)
            shutil.chown(datadir, user)
            shutil.chown(cluster, user)
        subprocess.run(
            [initdb, "-D", str(cluster), "-U", "linli", "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            user=user,
        )
        if clients is not None:
            with (cluster / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {clients} trust\n")
    argv = [
        postgres, "-D", str(cluster), "-p", str(port), "-h", host, "-k", str(datadir),
        # A test server: the OS keeps what a crash of the server itself would lose.
        "-c", "fsync=off", "-c", "max_connections=200",
    ]  # fmt: skip
    if netns is not None:
        # Entering the namespace takes root; the server then drops to its user in place
        # (setpriv execs, so the process stopped is PostgreSQL itself).
        drop = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"] if user else []
        argv = ["ip", "netns", "exec", netns, *drop, *argv]
        user = None
    server = _spawn("postgresql", argv, datadir, port, user=user)
    server.stop_signal = signal.SIGINT
    server.host = host
    # A TCP connect is not enough: PostgreSQL refuses sessions while it starts up.
    ready = [_postgresql_bin("pg_isready"), "-q", "-h", host, "-p", str(port)]
    _wait_ready(server, None, probe=lambda: subprocess.run(ready, check=False).returncode == 0)
    return server


def postgresql_url(server: LocalServer, database: str = "postgres") -> str:
    """The SQLAlchemy URL of a database on a server from `start_postgresql`."""
    return f"postgresql+psycopg://linli@{server.host}:{server.port}/{database}"


def start_store(datadir: Path) -> LocalServer | None:
    """The demo's VictoriaMetrics in `datadir`, or None once why it cannot start is printed."""
    try:
        return start_victoria_metrics(datadir / "victoria-metrics")
    except (ServerMissingError, ServerStartError) as exc:
        print(f"linli demo: {exc}", file=sys.stderr)
        return None


async def ports_listening(host: str, ports: range, within_s: float) -> None:
    """Until every port accepts a connection; OSError naming the first that does not."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    for port in ports:
        while True:
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError:
                if loop.time() > deadline:
                    raise OSError(f"station on {host}:{port} does not listen") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            break
