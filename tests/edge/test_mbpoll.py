"""mbpoll, an independent Modbus client, reads the simulator and agrees with the documented map."""

from __future__ import annotations

import datetime as dt
import re
import struct
import subprocess
from collections.abc import Iterator

import pytest

from linli.catalog.profile import RegisterType, get_profile
from linli.demo.servers import ServerMissingError, free_port, require_binary
from linli.sim.fleet import ChargerFleetSpec, make_station
from linli.sim.image import build_image
from support import start_sim, stop_process

pytestmark = pytest.mark.servers  # every test here starts a server or a process

START = "2021-01-08T21:00+08:00"
SPEC = ChargerFleetSpec(stations=1, seed=3, warmup_s=3 * 3600)


@pytest.fixture(scope="module")
def station_port() -> Iterator[int]:
    port = free_port()
    proc = start_sim(
        "charger",
        "--port",
        str(port),
        "--seed",
        str(SPEC.seed),
        "--start",
        START,
        "--warmup",
        str(SPEC.warmup_s),
        "--time-scale",
        "0",
    )
    yield port
    assert stop_process(proc) == 0


def run_mbpoll(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """mbpoll once, Modbus TCP to the station, zero-based addresses; `args` pick table and range."""
    try:
        binary = require_binary("mbpoll")
    except ServerMissingError as exc:
        pytest.fail(str(exc), pytrace=False)
    return subprocess.run(
        [binary, "-m", "tcp", "-a", "1", "-0", "-1", "-o", "2", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def mbpoll(port: int, *args: str) -> list[str]:
    """Read with mbpoll; return the values it printed."""
    result = run_mbpoll(port, *args, "127.0.0.1")
    assert result.returncode == 0, result.stdout + result.stderr
    return re.findall(r"^\[\d+\]:\s+(\S+)", result.stdout, flags=re.MULTILINE)


def model() -> dict[RegisterType, list[int]]:
    station = make_station(SPEC, 1, dt.datetime.fromisoformat(START).timestamp())
    return build_image(get_profile("charger"), station.values(), 10)


def test_registers_match_the_map(station_port: int) -> None:
    image = model()
    station = [int(v) for v in mbpoll(station_port, "-t", "3", "-r", "0", "-c", "7")]
    assert station == image[RegisterType.INPUT][0:7]
    # Port 10's block ends at 198; the table ends there too.
    ports = [int(v) for v in mbpoll(station_port, "-t", "3", "-r", "100", "-c", "99")]
    assert ports == image[RegisterType.INPUT][100:199]
    assert len(image[RegisterType.INPUT]) == 199
    settings = [int(v) for v in mbpoll(station_port, "-t", "4", "-r", "0", "-c", "2")]
    assert settings == [1400, 360]


def test_values_decode_as_documented(station_port: int) -> None:
    image = model()[RegisterType.INPUT]
    # voltage u16 x0.1 at 0; cabinet_temp int16 x0.1 at 1; total_power u32 big/big at 3.
    volts = int(mbpoll(station_port, "-t", "3", "-r", "0")[0]) / 10
    assert 150 < volts < 260
    total_power = int(mbpoll(station_port, "-t", "3:int", "-B", "-r", "3")[0])
    assert total_power == (image[3] << 16) | image[4]
    # energy_total float32 big/big at 5: mbpoll decodes the float itself.
    energy = float(mbpoll(station_port, "-t", "3:float", "-B", "-r", "5")[0])
    # mbpoll prints two decimals.
    assert energy == pytest.approx(struct.unpack(">f", struct.pack(">HH", image[5], image[6]))[0], abs=0.006)
    assert energy > 1000


def test_stop_coil_stops_a_charging_port(station_port: int) -> None:
    image = model()[RegisterType.INPUT]
    charging = [n for n in range(1, 11) if image[100 + 10 * (n - 1)] == 1]
    assert charging, "the simulated evening should have a charging port"
    port = charging[0]
    base = 100 + 10 * (port - 1)
    # Write 1 to the port's stop coil, as a technician would.
    written = run_mbpoll(station_port, "-t", "0", "-r", str(base), "127.0.0.1", "1")
    assert written.returncode == 0, written.stdout + written.stderr
    state, reason, _current, power = (
        int(v) for v in mbpoll(station_port, "-t", "3", "-r", str(base), "-c", "4")
    )
    assert (state, reason, power) == (0, 3, 0)  # idle, stopped manually, no power
    assert int(mbpoll(station_port, "-t", "0", "-r", str(base))[0]) == 0  # the command coil reads back 0
    # An address where no command lives is refused with a Modbus exception.
    bad = run_mbpoll(station_port, "-t", "0", "-r", "5", "127.0.0.1", "1")
    assert bad.returncode != 0 or "Illegal" in bad.stdout + bad.stderr
