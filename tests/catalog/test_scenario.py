"""The district scenario: what it contains, how faults are aimed, and its edge config."""

from __future__ import annotations

import tomllib
from collections import Counter
from pathlib import Path

import pytest

from linli.catalog.profile import builtin_profiles
from linli.catalog.scenario import builtin_scenario_path, expand, load_scenario
from linli.edge.config import EdgeConfig, load_config
from linli.sim.context import kind_module
from linli.sim.district import FaultSpec, load_timetable, resolve_faults
from linli.sim.edgeconfig import district_edge_config
from linli.transit.gtfs import load_feed

ROOT = Path(__file__).resolve().parents[2]


def test_the_builtin_district_is_the_seed_newsletters() -> None:
    scenario = load_scenario(builtin_scenario_path())
    devices = expand(scenario)
    per_kind = Counter(d.kind for d in devices)
    assert len({d.site for d in devices if d.kind == "charger"}) == 25
    assert per_kind["camera"] == 6
    assert len({d.site for d in devices if d.kind.startswith("fire_")}) == 4
    assert per_kind["rescue_point"] == 28
    # The trucks run the timetable's routes, one truck each; the renovation truck is on call.
    feed = load_timetable(scenario, Path(__file__).parents[2] / scenario.timetable)
    assert feed is not None
    trucks = {d.device for d in devices if d.kind == "truck"}
    assert {r.truck for r in feed.routes.values()} == trucks - {"truck-renovation"}
    assert {r.waste_type for r in feed.routes.values()} == {"wet", "dry", "recyclable", "hazardous"}
    # A building's fire sensors share its gateway's port, one unit id each.
    tower = [d for d in devices if d.site == "hongxu-tower" and d.port is not None]
    assert len({d.port for d in tower}) == 1
    assert sorted(d.unit or 0 for d in tower) == list(range(1, len(tower) + 1))
    ports = [d.port for d in devices if d.port is not None and d.kind == "charger"]
    assert len(set(ports)) == len(ports) == 50


def test_every_profile_has_a_simulator_found_by_its_kind() -> None:
    for kind in builtin_profiles():
        assert callable(kind_module(kind).make), kind
    with pytest.raises(KeyError, match=r"add linli/sim/kinds/lamp\.py"):
        kind_module("lamp")


def test_faults_must_hit_a_device_that_understands_them() -> None:
    devices = expand(load_scenario(builtin_scenario_path()))
    faults = resolve_faults(devices, [FaultSpec("hongxu-tower", "leak"), FaultSpec("ronghua-1", "offline")])
    assert faults[("hongxu-tower", "sprinkler-1")] == {"leak"}
    assert faults[("hongxu-tower", "tank-1")] == {"leak"}
    assert ("hongxu-tower", "pump-1") not in faults
    assert all(v == {"offline"} for k, v in faults.items() if k[0] == "ronghua-1")
    with pytest.raises(ValueError, match=r"it knows: .*offline"):
        resolve_faults(devices, [FaultSpec("fleet/truck-wet-north", "leak")])
    with pytest.raises(ValueError, match="no site or site/device 'nowhere'"):
        resolve_faults(devices, [FaultSpec("nowhere", "offline")])
    with pytest.raises(ValueError, match="TARGET:NAME"):
        FaultSpec.parse("ronghua-1")


def test_the_generated_edge_config_covers_every_device_and_is_valid() -> None:
    scenario = load_scenario(builtin_scenario_path())
    text = district_edge_config(
        scenario, writer={"kind": "influxdb1", "url": "http://127.0.0.1:8086", "database": "x"}
    )
    config = EdgeConfig.model_validate(tomllib.loads(text))
    assert len(config.devices()) == len(expand(scenario))


def test_the_compose_district_config_is_current() -> None:
    path = ROOT / "deploy" / "district.toml"
    scenario = load_scenario(builtin_scenario_path())
    text = district_edge_config(
        scenario,
        writer={"kind": "influxdb2", "url": "http://influxdb:8086", "org": "linli", "bucket": "linli"},
        modbus_host="district",
        mqtt_host="broker",
        timetable=load_feed(ROOT / "deploy" / "gtfs" / "hongqiao"),
    )
    assert path.read_text() == text, (
        "regenerate with: linli sim district --edge-config deploy/district.toml ..."
    )
    assert len(load_config(path).devices()) == len(expand(scenario))
