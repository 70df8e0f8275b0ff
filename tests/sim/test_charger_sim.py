"""The charger simulator's injected faults: what a technician would see at the station."""

from __future__ import annotations

from linli.sim.charger import ChargerStation

START = 1_700_000_000.0  # a fixed instant; the simulation is deterministic from here


def after(hours: float, faults: frozenset[str] = frozenset()) -> ChargerStation:
    station = ChargerStation(seed=7, index=1, start=START, faults=faults)
    station.advance_to(START + hours * 3600)
    return station


def test_overheat_holds_port_1_past_its_limit_until_the_port_is_stopped() -> None:
    """The episode lasts until somebody acts, so an edge that polls late still sees it: under
    load a recording's polls came further apart than a few simulated minutes."""
    station = ChargerStation(seed=7, index=1, start=START, faults=frozenset({"overheat"}))
    temps = []
    for minute in range(1, 121):
        station.advance_to(START + minute * 60)
        temps.append(station.values()[(1, "temperature")])
    hot = [n for n, t in enumerate(temps) if t > 90]
    assert hot, max(temps)
    assert hot == list(range(hot[0], len(temps)))  # past the profile's limit from then on
    assert hot[0] < 30  # some twenty minutes on the loose contact
    assert max(temps) < 95  # below the station's own cut-off: it waits to be stopped
    assert station.values()[(1, "state")] == 1  # still charging
    station.stop_port(1)  # the edge's interlock writes the stop coil
    station.advance_to(START + 150 * 60)
    values = station.values()
    assert values[(1, "stop_reason")] == 3  # manual
    assert values[(1, "power")] == 0
    assert values[(1, "temperature")] < 85  # no current, no contact heat: it cools past the hysteresis
    assert all(values[(n, "temperature")] < 60 for n in range(2, 11))
    assert after(1).values()[(1, "temperature")] < 60  # a healthy station


def test_smoke_and_mains_faults_show_in_their_status_bits() -> None:
    assert after(0.01).values()[(None, "smoke_alarm")] == 0
    smoky = after(1, frozenset({"smoke"})).values()
    assert smoky[(None, "smoke_alarm")] == 1
    assert smoky[(None, "cabinet_temp")] > after(1).values()[(None, "cabinet_temp")] + 10
    assert after(0.01, frozenset({"mains"})).values()[(None, "mains_fault")] == 1
