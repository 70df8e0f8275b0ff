"""Register images: a device's values laid out per its profile's register map."""

from __future__ import annotations

from collections.abc import Mapping

from linli.catalog.derive import raw_for
from linli.catalog.profile import ModbusPoint, Profile, RegisterType
from linli.catalog.registers import Value, encode, encode_bits

# (channel or None, field) -> value
Values = Mapping[tuple[int | None, str], Value]
# A device's points by (profile, count): an image is built at every change of a device's values.
_POINTS: dict[tuple[int, int | None], tuple[Profile, list[tuple[int | None, ModbusPoint]]]] = {}


def _points(profile: Profile, count: int | None) -> list[tuple[int | None, ModbusPoint]]:
    cached = _POINTS.get((id(profile), count))
    if cached is None or cached[0] is not profile:
        cached = _POINTS[(id(profile), count)] = (profile, profile.modbus_points(count))
    return cached[1]


def table_sizes(profile: Profile, count: int | None = None) -> dict[RegisterType, int]:
    """How many addresses each table needs to hold every point and command."""
    sizes = dict.fromkeys(RegisterType, 1)
    assert profile.modbus is not None
    for _, point in _points(profile, count):
        end = point.address + point.type.registers
        sizes[point.table] = max(sizes[point.table], end)
    group = profile.modbus.group
    commands = [(0, c) for c in profile.modbus.commands]
    if group is not None:
        n = group.count if count is None else count
        commands += [((ch - 1) * group.stride, c) for ch in range(1, n + 1) for c in group.commands]
    for shift, command in commands:
        sizes[command.table] = max(sizes[command.table], command.address + shift + 1)
    return sizes


def build_image(profile: Profile, values: Values, count: int | None = None) -> dict[RegisterType, list[int]]:
    """Every table as a list of 16-bit registers (or 0/1 for bit tables)."""
    assert profile.modbus is not None
    mb = profile.modbus
    sizes = table_sizes(profile, count)
    image = {table: [0] * size for table, size in sizes.items()}
    bit_words: dict[tuple[RegisterType, int], dict[int, bool]] = {}
    device_row = {field: v for (channel, field), v in values.items() if channel is None}
    for channel, point in _points(profile, count):
        value = values.get((channel, point.field))
        if value is None:
            continue
        if channel is None and (point.decimals_from or point.offset_from):
            value = raw_for(mb, point.field, value, device_row)
        if point.bit is not None:
            bit_words.setdefault((point.table, point.address), {})[point.bit] = bool(value)
            continue
        regs = encode(point, value, mb.byte_order, mb.word_order)
        image[point.table][point.address : point.address + len(regs)] = regs
    for (table, address), bits in bit_words.items():
        image[table][address] = encode_bits(bits)
    return image
