"""The big screen's points exported from VictoriaMetrics, as line protocol again (`fromvm`)."""

from __future__ import annotations

from linli.dashboards import boards
from linli.dashboards.fromvm import booleans, measurements, to_lines


def test_exported_series_become_the_lines_the_panels_query_and_strings_stored_as_zero_are_left_out() -> None:
    dashboard = boards.to_json(boards.models()["linli-screen"])
    names, flags = measurements(dashboard), booleans(dashboard)
    assert {"charger", "fire_pressure", "waste_trip", "waste_renovation", "health"} <= names
    assert ("fire_level", "sensor_fault") in flags
    t0 = 1765000000000

    def series(name: str, values: list[float], **labels: str) -> dict[str, object]:
        times = [t0 + 1000 * i for i in range(len(values))]
        return {"metric": {"__name__": name, **labels}, "values": values, "timestamps": times}

    exported = [
        series("fire_pressure_pressure", [0.38], db="linli", site="hongxu tower", system="hydrant"),
        series("fire_level_sensor_fault", [1, 0], site="s"),
        series("waste_trip_served", [3], truck="t"),
        series("waste_trip_next_stop", [0], truck="t"),  # a string, which VictoriaMetrics made 0
        series("unrelated_metric", [1]),
    ]
    assert list(to_lines(exported, names, flags)) == [
        r"fire_pressure,site=hongxu\ tower,system=hydrant pressure=0.38 1765000000000",
        "fire_level,site=s sensor_fault=true 1765000000000",
        "fire_level,site=s sensor_fault=false 1765000001000",
        "waste_trip,truck=t served=3.0 1765000000000",
    ]
