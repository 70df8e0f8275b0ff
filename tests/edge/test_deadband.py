"""Report by exception: what is stored, what is held back, and what a reader can still trust."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linli.catalog.errors import ConfigError
from linli.catalog.profile import Threshold, get_profile
from linli.dashboards.alerts import RECENT
from linli.edge.config import load_config
from linli.edge.deadband import Deadband, Reporter, deadbands
from test_config import GOOD

T = 1_790_000_000_000


def stored(reporter: Reporter, values: list[float], step_ms: int = 1000) -> list[float | None]:
    """What each poll of `values` stores of field `v` (None: held back)."""
    out: list[float | None] = []
    for i, v in enumerate(values):
        kept = reporter.keep(None, {"v": v}, T + i * step_ms)
        out.append(kept.get("v"))
    return out


def test_a_value_is_stored_when_it_leaves_the_band_around_the_value_last_stored() -> None:
    reporter = Reporter({"v": Deadband(1.0, 600_000)})
    # A slow drift is caught: each step is small, but 1.2 is more than 1 from the 0 stored.
    assert stored(reporter, [0, 0.4, 0.8, 1.2, 1.5, 2.2, 2.3, 0.5]) == [
        0,
        None,
        None,
        1.2,
        None,
        2.2,
        None,
        0.5,
    ]
    assert reporter.suppressed == 4


def test_a_zero_deadband_stores_every_change_and_nothing_else() -> None:
    reporter = Reporter({"v": Deadband(0.0, 600_000)})
    assert stored(reporter, [1, 1, 1, 2, 2, 1]) == [1, None, None, 2, None, 1]


def test_the_heartbeat_stores_an_unchanged_value_again() -> None:
    reporter = Reporter({"v": Deadband(1.0, 5_000)})
    assert stored(reporter, [7] * 12) == [7, None, None, None, None, 7, None, None, None, None, 7, None]


def test_crossing_an_alarm_limit_is_stored_even_inside_the_band() -> None:
    limit = Threshold(field="v", above=60.0, title="hot")
    reporter = Reporter({"v": Deadband(0.5, 600_000, (limit,))})
    # 60.2 and 59.9 are within 0.5 of the value before; the store must still agree with the alert.
    assert stored(reporter, [59.8, 60.2, 60.1, 59.9, 59.8]) == [59.8, 60.2, None, 59.9, None]


def test_a_clock_set_back_does_not_hold_values_back() -> None:
    reporter = Reporter({"v": Deadband(1.0, 60_000)})
    assert reporter.keep(None, {"v": 1.0}, T) == {"v": 1.0}
    assert reporter.keep(None, {"v": 1.0}, T - 3_600_000) == {"v": 1.0}


def test_fields_without_a_deadband_pass_and_channels_are_apart() -> None:
    reporter = Reporter({"v": Deadband(1.0, 600_000)})
    assert reporter.keep(1, {"v": 5.0, "w": 3}, T) == {"v": 5.0, "w": 3}
    assert reporter.keep(1, {"v": 5.0, "w": 3}, T + 1000) == {"w": 3}
    assert reporter.keep(2, {"v": 5.0}, T + 1000) == {"v": 5.0}  # port 2's first value
    reporter.forget()
    assert reporter.keep(1, {"v": 5.0}, T + 2000) == {"v": 5.0}  # after an outage, all again


@given(
    steps=st.lists(st.floats(min_value=-3, max_value=3, allow_nan=False), min_size=1, max_size=300),
    width=st.floats(min_value=0, max_value=5, allow_nan=False),
)
def test_the_value_last_stored_is_never_further_than_the_deadband_from_the_truth(
    steps: list[float], width: float
) -> None:
    """What `last()` with `fill(previous)` reads back, poll by poll."""
    reporter = Reporter({"v": Deadband(width, 10**9)})
    truth = 0.0
    held: float | None = None
    for i, step in enumerate(steps):
        truth += step
        kept = reporter.keep(None, {"v": truth}, T + i * 1000)
        held = kept.get("v", held)
        assert held is not None
        assert abs(held - truth) <= width


def test_the_profiles_deadbands_with_the_device_s_limits_and_overrides() -> None:
    pressure = get_profile("fire_pressure")
    sprinkler = deadbands(pressure, {"system": "sprinkler"})
    hydrant = deadbands(pressure, {"system": "hydrant"})
    assert sprinkler["pressure"].width == 0.01
    assert [t.value for t in sprinkler["pressure"].limits] == [0.1]
    assert [t.value for t in hydrant["pressure"].limits] == [0.07]
    # The computed sensor fault goes with the values it qualifies.
    assert sprinkler["sensor_fault"].width == 0
    changed = deadbands(pressure, {}, overrides={"pressure": 0.05}, store_every=30)
    assert (changed["pressure"].width, changed["pressure"].every_ms) == (0.05, 30_000)
    assert deadbands(get_profile("camera"), {}) == {}


def test_every_heartbeat_is_inside_the_window_the_dashboards_read_now_from() -> None:
    # The screen's "now" panels take last() over RECENT; a quiet value must be stored within it.
    minutes = int(RECENT.rsplit("-", 1)[1].strip().removesuffix("m"))
    for kind in ("charger", "fire_pressure", "fire_level", "fire_point", "fire_pump"):
        bands = deadbands(get_profile(kind), {})
        assert bands, kind
        assert all(b.every_ms < minutes * 60_000 for b in bands.values()), kind


def test_config_deadbands_name_stored_fields_of_modbus_devices(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"

    def problems(text: str) -> list[str]:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            load_config(path)
        return info.value.problems

    [problem] = problems(GOOD + "deadband = { powr = 5 }\n")
    assert "sites[0].devices[0].deadband" in problem
    assert "'powr'" in problem
    assert "power" in problem
    camera = GOOD.replace('profile = "charger"', 'profile = "camera"') + "deadband = { count = 1 }\n"
    assert any("deadbands apply to Modbus devices" in p for p in problems(camera))
    path.write_text(GOOD + "deadband = { power = 5 }\nstore_every = 60\n", encoding="utf-8")
    [(_, device)] = load_config(path).devices()
    assert (device.deadband, device.store_every, device.report_by_exception) == ({"power": 5.0}, 60.0, True)
