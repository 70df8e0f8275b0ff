"""`linli demo`, the whole district, as a newcomer runs it: a simulated hour and more at 120x.

It starts its own Mosquitto, VictoriaMetrics, notifier and waste service; every device kind
stores points, a keeper is told the truck is coming, an alert reaches its subscriber and a
booking made with the printed booking link reaches its requester, all through the demo's
inbox; faults typed in its terminal while it runs (a blocked gate, smoke in a charging
cabinet, a compound offline) reach the people they concern; Ctrl-C (SIGINT) leaves the edge
buffer empty and the demo exits 0.

The clock starts at 06:45 tomorrow (Asia/Shanghai), so that the 08:10 dry-waste trip south, whose
gate is blocked, is still to come or on its way however long a loaded machine takes to start the
demo (at x120, up to a minute), and the renovation truck's shift has begun by the booked window.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import re
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from linli.catalog.scenario import builtin_scenario_path, load_scenario
from linli.edge.buffer import DurableBuffer
from linli.sim.district import load_timetable
from support import http_get, wait_for

ROOT = Path(__file__).resolve().parents[2]
ZONE = ZoneInfo("Asia/Shanghai")
SCALE = 120
KINDS = ("charger_", "fire_", "camera_", "rescue_point_", "truck_")


class Output:
    """The demo's standard output, line by line, read in a thread of its own."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout

        def read() -> None:
            for line in stdout:
                self._queue.put(line)
            self._queue.put(None)  # the demo has exited

        threading.Thread(target=read, daemon=True).start()

    def until(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first line (from here on) that matches `pattern`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(left, 0.01))
            except queue.Empty:
                so_far = "".join(self.lines)
                raise AssertionError(f"no line like {pattern!r} in {timeout}s; so far:\n{so_far}") from None
            if line is None:
                so_far = "".join(self.lines)
                raise AssertionError(f"the demo exited before a line like {pattern!r}:\n{so_far}")
            self.lines.append(line)
            found = re.search(pattern, line)
            if found:
                return found


def inbox(url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = json.loads(http_get(f"{url}/messages.json"))
    return messages


def stored(store: str, prefix: str) -> list[int]:
    """The times (ms) of every sample of every series whose name starts with `prefix`."""
    http_get(f"{store}/internal/force_flush")
    query = urllib.parse.urlencode(
        {"match[]": f'{{__name__=~"{prefix}.*"}}', "start": "0", "end": "2100-01-01T00:00:00Z"}
    )
    lines = http_get(f"{store}/api/v1/export?{query}").decode().splitlines()
    return [t for line in lines if line.strip() for t in json.loads(line)["timestamps"]]


def book(waste: str, token: str, compound: str, start: dt.datetime) -> dict[str, Any]:
    body = {
        "compound": compound,
        "bags": 20,
        "earliest": (start + dt.timedelta(minutes=45)).isoformat(),
        "latest": (start + dt.timedelta(hours=4)).isoformat(),
        "contact": {"name": "王师傅", "phone": "+8613800138000"},
        "key": "demo-test-1",
    }
    request = urllib.request.Request(  # noqa: S310 (the demo's loopback service)
        f"{waste}/bookings",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        found: dict[str, Any] = json.loads(answer.read())
        return found


def refused(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    try:
        urllib.request.urlopen(request, timeout=30).close()  # noqa: S310
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


@pytest.mark.servers
def test_the_district_demo_runs_an_hour_tells_everyone_and_flushes_on_ctrl_c(tmp_path: Path) -> None:
    tomorrow = dt.datetime.now(ZONE).date() + dt.timedelta(days=1)
    start = dt.datetime.combine(tomorrow, dt.time(6, 45), ZONE)
    datadir = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "linli.cli", "demo", "--datadir", str(datadir), "--time-scale", str(SCALE),
         "--start", start.isoformat()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        start_new_session=True,  # a process group of its own, as a terminal's foreground job has
    )  # fmt: skip
    out = Output(proc)
    try:
        store = out.until(r"store +(http://\S+)", 120)[1]
        inbox_url = out.until(r"inbox +(http://\S+)/", 30)[1]
        link = out.until(r"booking +(http://\S+)/book#token=(\S+) +\((.+), (\S+)\)", 30)
        waste, token, compound = link[1], link[2], link[4]
        # The link's token books; it is not the admin's, and may not see the trips.
        assert token != (datadir / "services" / "admin-token").read_text().strip()
        assert refused(f"{waste}/trips", token) == 403
        answer = book(waste, token, compound, start)
        assert answer["state"] in ("requested", "offered", "accepted"), answer

        # Faults on demand, typed in the demo's terminal while it runs.
        assert proc.stdin is not None
        proc.stdin.write("fleet/truck-dry-south:blocked\nronghua-1/station-2:smoke\nronghua-2:offline\n")
        proc.stdin.flush()
        out.until(r"fault fleet/truck-dry-south:blocked on fleet/truck-dry-south;", 120)
        out.until(r"fault ronghua-1/station-2:smoke on ronghua-1/station-2;", 120)
        offline = out.until(r"fault ronghua-2:offline on (.+);", 120)[1]
        assert "ronghua-2/station-1" in offline.split(", "), offline

        # A simulated hour (at least): the view's clock line says so.
        hour_later = start + dt.timedelta(hours=1)
        while True:
            now = out.until(r"linli demo  (\S+ \S+) Asia/Shanghai", 300)[1]
            if dt.datetime.fromisoformat(now).replace(tzinfo=ZONE) >= hour_later:
                break
        roles = {"keeper", "subscriber", "requester", "property"}
        wait_for(
            lambda: roles <= {m["role"] for m in inbox(inbox_url)},
            "a keeper, a subscriber, a requester, a property office",
            120,
        )
        messages = inbox(inbox_url)
        # Every kind stored, on the demo's one clock: the devices' own times (the MQTT devices
        # stamp theirs in the simulator's process) are from the start on, not from its past.
        for kind in KINDS:
            times = stored(store, kind)
            assert times, f"no {kind}* points stored"
            assert min(times) >= start.timestamp() * 1000 - 60_000, (kind, min(times))
        # The big screen, drawn from the demo's store as its banner says, every panel filled.
        screen = tmp_path / "big-screen.png"
        drawn = subprocess.run(
            [sys.executable, "-m", "linli.cli", "dashboards", "picture", "--victoria-metrics", store,
             "--out", str(screen)],
            capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
        )  # fmt: skip
        assert drawn.returncode == 0, drawn.stderr[-3000:]
        assert "every panel has data" in drawn.stderr, drawn.stderr[-3000:]
        assert screen.stat().st_size > 100_000
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal's Ctrl-C does
        try:
            code = proc.wait(180)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    out.until(r"demo stopped", 10)
    assert code == 0, "".join(out.lines[-20:])
    again_the_printed_commands_work(out, tmp_path)

    # A keeper told ahead (the first keeper message may be an arrival: a bin room minutes from
    # the depot is told before the truck leaves, when the clock starts with the truck out).
    keepers = [m for m in messages if m["role"] == "keeper"]
    keeper = next((m for m in keepers if "预计" in m["text"]), None)
    assert keeper is not None, [m["text"] for m in keepers][:10]
    assert "垃圾房" in keeper["name"], keeper
    alerts = [m for m in messages if m["role"] == "subscriber"]
    assert any("烟雾" in m["title"] for m in alerts), alerts  # the smoke typed in, at station 2
    # The blocked gate: its compound's property office is asked to clear it.
    office = next(m for m in messages if m["role"] == "property")
    assert office["name"].endswith("物业"), office
    assert "通道堵塞" in office["title"], office
    requester = next(m for m in messages if m["role"] == "requester")
    # The operator's SMS gateway knows the requester by the phone the booking gave.
    assert requester["name"] == "+8613800138000", requester
    assert "预约" in requester["text"], requester
    # Times are the district's, on the demo's clock: tomorrow, after the start.
    assert all(m["at"] >= f"{start:%Y-%m-%d %H:%M}" for m in messages)
    # Nothing left unflushed: the agent's durable buffer is empty, and the inbox was saved.
    buffer = DurableBuffer(datadir / "services" / "edge.buffer.sqlite", max_bytes=10**9)
    try:
        assert buffer.oldest(1) == []
    finally:
        buffer.close()
    assert len(json.loads((datadir / "inbox.json").read_text(encoding="utf-8"))) >= len(messages)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """linli's wheel, built from this checkout as `pip wheel` builds it (once for the module)."""
    folder = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(folder)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    [found] = folder.glob("linli-*.whl")
    return found


def again_the_printed_commands_work(out: Output, cwd: Path) -> None:
    """What the demo prints at its end to look at the data again, run as printed: the store
    started again on its default port, curl (with -g) exporting the series, the saved inbox,
    the waste service's tables."""
    out.until(r"Again:$", 10)
    store = out.until(r"^  (victoria-metrics .*) &$", 10)[1]
    curl = out.until(r"^  (curl -g .*)$", 10)[1]
    tool = out.until(r"^  (python3 -m json.tool .*)$", 10)[1]
    sqlite = out.until(r"^  (sqlite3 .*)$", 10)[1]

    def run(line: str) -> str:
        done = subprocess.run(
            ["bash", "-c", line], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
        )
        assert done.returncode == 0, (line, done.stderr[-2000:])
        return done.stdout

    vm = subprocess.Popen(
        ["bash", "-c", f"exec {store}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: _answers("http://127.0.0.1:8428/health"), "the store started again as printed", 60)
        exported = [json.loads(line) for line in run(curl).splitlines()]
        assert {e["metric"]["__name__"].split("_")[0] for e in exported} & {
            "charger",
            "fire",
            "camera",
            "truck",
        }
    finally:
        os.killpg(vm.pid, signal.SIGINT)
        vm.wait(60)
    assert '"role": ' in run(tool)
    assert "booking" in run(sqlite).split()


def _answers(url: str) -> bool:
    try:
        http_get(url, timeout=2)
    except OSError:
        return False
    return True


@pytest.mark.slow
def test_the_district_s_scenario_and_timetable_ship_in_the_wheel_and_are_found_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wheel: Path
) -> None:
    """`pip install linli` has no deploy/ folder: the timetable is package data, and the
    scenario's relative `timetable` finds it from wherever the command runs."""
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("linli/catalog/scenarios/")}
    feed = ROOT / "deploy" / "gtfs" / "hongqiao"
    assert {f"linli/catalog/scenarios/gtfs/hongqiao/{f.name}" for f in feed.iterdir()} <= shipped
    assert "linli/catalog/scenarios/hongqiao.toml" in shipped

    monkeypatch.chdir(tmp_path)  # no deploy/ here
    timetable = load_timetable(load_scenario(builtin_scenario_path()))
    assert timetable is not None
    assert len(timetable.trips) == len((feed / "trips.txt").read_text().splitlines()) - 1


@pytest.mark.servers
def test_linli_demo_from_the_wheel_in_a_fresh_venv_runs_from_an_empty_folder(
    tmp_path: Path, wheel: Path
) -> None:
    """`pip install linli` then `linli demo` in a folder with nothing in it: the wheel alone
    (no checkout on the path) has the scenario, the timetable, the profiles, the catalogs and
    the pages. The venv is new and linli is installed into it from the wheel; its dependencies,
    which this machine cannot download, are the tested versions (constraints.txt) already
    installed for the tests, on its path after its own packages."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
         str(wheel)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    own = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    # A path line only: the tests' site-packages, whose .pth files (linli's editable install) stay unread.
    (own / "tested-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    where = subprocess.check_output(
        [python, "-c", "import linli.demo.district as d; print(d.__file__)"], text=True, cwd=empty, env=env
    )
    assert Path(where.strip()).is_relative_to(own), where
    demo = subprocess.run(
        [str(venv / "bin" / "linli"), "demo", "--duration", "20", "--time-scale", "60"],
        capture_output=True, text=True, timeout=600, cwd=empty, env=env, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, (demo.stdout[-3000:], demo.stderr[-3000:])
    stopped = re.search(
        r"demo stopped: ([\d,]+) lines written to VictoriaMetrics, ([\d,]+) left", demo.stdout
    )
    assert stopped, demo.stdout[-3000:]
    assert int(stopped[1].replace(",", "")) > 0
    assert stopped[2] == "0"
    assert (empty / ".linli-demo" / "inbox.json").exists()
    assert (empty / ".linli-demo" / "services" / "gtfs" / "stops.txt").exists()  # from the package's data


@pytest.mark.servers
def test_the_inbox_page_shows_each_person_what_they_received_and_refreshes_itself(tmp_path: Path) -> None:
    """In Chromium: the rendered Chinese text under the person's name and role, with the channel
    and the time in Asia/Shanghai; a message that comes later appears without a reload; the
    page runs whole under its Content-Security-Policy."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from linli.demo.inbox import Inbox, InboxServer, Person
    from test_booking_page import browser, visible

    server = InboxServer(Inbox())
    server.inbox.register("keeper-anlong-1", Person("安龙小区垃圾房保洁员", "keeper", "短信 SMS"))
    server.inbox.register("alerts", Person("城运中心值班员", "subscriber", "webhook"))
    server.start()
    notice = {
        "title": "安龙小区垃圾房：干垃圾清运预告",
        "text": "干垃圾清运车12号预计10:47到达安龙小区垃圾房。",
    }
    alert = {"title": "充电柜内有烟雾", "text": "【告警】【紧急】充电柜内有烟雾"}
    profile = tmp_path / "chromium"
    driver = browser(profile)
    try:
        post = urllib.request.Request(  # noqa: S310 (loopback)
            server.hook("keeper-anlong-1"), data=json.dumps(notice).encode(), method="POST"
        )
        urllib.request.urlopen(post, timeout=10).close()  # noqa: S310
        driver.get(server.url + "/")
        keeper = driver.find_element(By.ID, "keeper").text
        assert "垃圾房保洁员 keepers (1)" in keeper
        row = driver.find_element(By.CSS_SELECTOR, "tr.message").text
        assert "安龙小区垃圾房保洁员" in row
        assert "短信 SMS" in row
        assert notice["title"] in row
        assert notice["text"] in row
        [when] = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row)
        shanghai = dt.datetime.strptime(when, "%Y-%m-%d %H:%M:%S").replace(tzinfo=ZONE)
        assert abs((shanghai - dt.datetime.now(ZONE)).total_seconds()) < 3600  # Shanghai's, not UTC's
        # Later: it shows up by itself.
        post = urllib.request.Request(  # noqa: S310
            server.hook("alerts"), data=json.dumps(alert).encode(), method="POST"
        )
        urllib.request.urlopen(post, timeout=10).close()  # noqa: S310

        # The page reloads itself every 5 s: a read during a reload finds the old page gone.
        def with_the_alert(d: Any) -> str | bool:
            text = visible(d)
            return text if "告警订阅人 alert subscribers (1)" in text else False

        shown = str(
            WebDriverWait(driver, 30, ignored_exceptions=[StaleElementReferenceException]).until(
                with_the_alert
            )
        )
        assert alert["text"] in shown
        logged = driver.get_log("browser")  # type: ignore[no-untyped-call]
        refused = [e["message"] for e in logged if "Refused" in e["message"]]
        assert refused == []
    finally:
        driver.quit()
        server.stop()


def test_the_clock_starts_now_when_a_truck_runs_and_just_before_the_next_trip_when_none_does() -> None:
    """A newcomer sees trucks move and keepers told within minutes at any hour: on Monday
    2026-12-07 at 14:19 no truck runs until the 17:30 wet-waste rounds, so the clock starts at
    17:10; during the dry-waste rounds, or within the hour before one, it starts now."""
    from linli.demo.district import truck_time
    from linli.transit.gtfs import load_feed

    feed = load_feed(ROOT / "deploy" / "gtfs" / "hongqiao")

    def at(day: int, hour: int, minute: int) -> float:
        return dt.datetime(2026, 12, day, hour, minute, tzinfo=ZONE).timestamp()

    assert truck_time(feed, at(7, 14, 19)) == at(7, 17, 10)
    assert truck_time(feed, at(7, 23, 0)) == at(8, 6, 10)  # the next morning's first round
    for running in (at(7, 8, 5), at(7, 7, 45), at(7, 17, 0)):
        assert truck_time(feed, running) == running
