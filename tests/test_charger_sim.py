"""The charger simulator's injected faults: what a technician would see at the station."""

from __future__ import annotations

from linli.sim.charger import ChargerStation

START = 1_700_000_000.0  # a fixed instant; the simulation is deterministic from here


def after(hours: float, faults: frozenset[str] = frozenset()) -> ChargerStation:
    station = ChargerStation(seed=7, index=1, start=START, faults=faults)
    station.advance_to(START + hours * 3600)
    return station


def test_overheat_heats_port_1_while_it_charges_until_the_station_cuts_it_off() -> None:
    station = ChargerStation(seed=7, index=1, start=START, faults=frozenset({"overheat"}))
    temps = []
    for minute in range(1, 61):
        station.advance_to(START + minute * 60)
        temps.append(station.values()[(1, "temperature")])
    peak = temps.index(max(temps))
    assert 90 < temps[peak] < 97  # past the profile's limit, up to the station's own 95 degC cut-off
    values = station.values()
    assert values[(1, "stop_reason")] == 5  # over_temperature: the station stopped it itself
    assert values[(1, "power")] == 0
    assert temps[-1] < temps[peak] - 10  # no current, no contact heat: it cools
    assert all(values[(n, "temperature")] < 60 for n in range(2, 11))
    assert after(1).values()[(1, "temperature")] < 60  # a healthy station


def test_smoke_and_mains_faults_show_in_their_status_bits() -> None:
    assert after(0.01).values()[(None, "smoke_alarm")] == 0
    smoky = after(1, frozenset({"smoke"})).values()
    assert smoky[(None, "smoke_alarm")] == 1
    assert smoky[(None, "cabinet_temp")] > after(1).values()[(None, "cabinet_temp")] + 10
    assert after(0.01, frozenset({"mains"})).values()[(None, "mains_fault")] == 1
