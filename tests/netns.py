"""Separate hosts on this machine: Linux network namespaces on one bridge.

The bridge lives in the test's own namespace, which is the first host (it has the bridge's
address); every other host is a namespace with one veth into the bridge. The addresses are
from 198.18.0.0/15, the range kept for benchmarking networks, which nothing routes: the
traffic never leaves the machine. A host can be cut off (its port taken off the bridge),
partitioned from one peer (a neighbour entry that sends its packets nowhere, so they vanish
without an error, as on a broken link), and its processes killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

BLACKHOLE_MAC = "02:00:00:00:00:01"  # a locally administered address no interface has


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Hosts:
    """Hosts by name: `address(name)`, `run(name, argv)`; `close()` removes them all."""

    def __init__(self, names: list[str]) -> None:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            pytest.fail(
                "a test of several hosts needs network namespaces: run it as root with iproute2 "
                "installed (apt-get install iproute2), as CI does"
            )
        tag = os.getpid() % 10_000
        self.net = f"198.18.{os.getpid() % 250}"
        self.bridge = f"lnbr{tag}"
        self.hosts = {
            name: (f"ln{tag}-{name}", f"lnv{tag}{i}", f"{self.net}.{10 + i}") for i, name in enumerate(names)
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        try:
            ip("link", "add", self.bridge, "type", "bridge")
            ip("addr", "add", f"{self.net}.1/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
            for ns, veth, address in self.hosts.values():
                ip("netns", "add", ns)
                ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                ip("link", "set", veth, "master", self.bridge)
                ip("link", "set", veth, "up")
                ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
                ip("-n", ns, "link", "set", "eth0", "up")
                ip("-n", ns, "link", "set", "lo", "up")
        except subprocess.CalledProcessError as exc:
            self.close()
            pytest.fail(f"could not build the test network: {' '.join(exc.cmd)}: {exc.stderr.strip()}")

    @property
    def here(self) -> str:
        """The address of the test's own host (the bridge)."""
        return f"{self.net}.1"

    @property
    def network(self) -> str:
        return f"{self.net}.0/24"

    def address(self, name: str) -> str:
        return self.hosts[name][2]

    def namespace(self, name: str) -> str:
        return self.hosts[name][0]

    def run(
        self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `argv` on host `name`, its output in `log`."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace(name), *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def cut(self, name: str) -> None:
        """Unplug the host: its port leaves the bridge, its packets go nowhere, nobody is told."""
        ip("link", "set", self.hosts[name][1], "nomaster")

    def mend(self, name: str) -> None:
        ip("link", "set", self.hosts[name][1], "master", self.bridge)

    def partition(self, name: str, peer: str) -> None:
        """Host `name`'s packets to `peer` vanish; the rest of its network works."""
        ip("-n", self.namespace(name), "neigh", "replace", self.address(peer), "lladdr", BLACKHOLE_MAC,
           "dev", "eth0", "nud", "permanent")  # fmt: skip

    def heal(self, name: str, peer: str) -> None:
        ip("-n", self.namespace(name), "neigh", "del", self.address(peer), "dev", "eth0")

    def kill(self, name: str) -> None:
        """SIGKILL every process on the host, as a power cut would."""
        listing = subprocess.run(
            ["ip", "netns", "pids", self.namespace(name)], capture_output=True, text=True, check=False
        )
        for pid in listing.stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        for proc in self.procs:
            if proc.poll() is None and str(proc.pid) in listing.stdout.split():
                proc.wait(10)

    def close(self) -> None:
        for name in self.hosts:
            self.kill(name)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for ns, _, _ in self.hosts.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
