"""Values that need more than one register: decimals and offsets read from the device,
and sensor-fault checks that decide whether a value is a measurement at all.
"""

from __future__ import annotations

from linli.catalog.profile import ModbusMap
from linli.catalog.registers import DecodeError, Value

MAX_DECIMALS = 6


def finish_device_row(mb: ModbusMap, row: dict[str, Value]) -> tuple[dict[str, Value], list[DecodeError]]:
    """Apply the map's derivations to a device-level row; return it and the values dropped."""
    dropped: list[DecodeError] = []
    out = dict(row)
    for point in mb.points:
        if (point.decimals_from is None and point.offset_from is None) or point.field not in out:
            continue
        raw = out[point.field]
        decimals = out.get(point.decimals_from, 0) if point.decimals_from else 0
        offset = out.get(point.offset_from, 0) if point.offset_from else 0
        if not isinstance(decimals, int) or not 0 <= decimals <= MAX_DECIMALS:
            del out[point.field]
            dropped.append(DecodeError(point.field, "bad_decimals", f"decimals register says {decimals}"))
            continue
        value = raw + offset
        out[point.field] = value / 10**decimals if decimals else value
    for fault in mb.faults:
        live = out.get(fault.point)
        if live is None:
            continue
        broken = not fault.min <= live <= fault.max
        out[fault.field] = broken
        if broken:
            for name in fault.drops:
                out.pop(name, None)
    for point in mb.points:
        if not point.store:
            out.pop(point.field, None)
    return out, dropped


def raw_for(mb: ModbusMap, field: str, value: float, row: dict[str, Value]) -> int | float:
    """The inverse for a simulator: the raw register value that reads back as `value`."""
    point = next(p for p in mb.points if p.field == field)
    decimals = int(row.get(point.decimals_from, 0)) if point.decimals_from else 0
    offset = int(row.get(point.offset_from, 0)) if point.offset_from else 0
    if point.decimals_from is None and point.offset_from is None:
        return value
    raw: int = round(value * 10**decimals) - offset
    return raw
