"""The charger simulator's injected faults: what a technician would see at the station."""

from __future__ import annotations

from linli.sim.charger import ChargerStation

START = 1_700_000_000.0  # a fixed instant; the simulation is deterministic from here


def after(hours: float, faults: frozenset[str] = frozenset()) -> ChargerStation:
    station = ChargerStation(seed=7, index=1, start=START, faults=faults)
    station.advance_to(START + hours * 3600)
    return station


def test_overheat_takes_port_1_past_its_warning_limit_and_leaves_the_others() -> None:
    healthy, faulty = after(1), after(1, frozenset({"overheat"}))
    values = faulty.values()
    assert values[(1, "temperature")] > 90  # the profile's port limit
    assert all(values[(n, "temperature")] < 60 for n in range(2, 11))
    assert healthy.values()[(1, "temperature")] < 60


def test_smoke_and_mains_faults_show_in_their_status_bits() -> None:
    assert after(0.01).values()[(None, "smoke_alarm")] == 0
    smoky = after(1, frozenset({"smoke"})).values()
    assert smoky[(None, "smoke_alarm")] == 1
    assert smoky[(None, "cabinet_temp")] > after(1).values()[(None, "cabinet_temp")] + 10
    assert after(0.01, frozenset({"mains"})).values()[(None, "mains_fault")] == 1
