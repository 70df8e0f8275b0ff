"""Read planning: as few reads as the protocol and the device allow."""

from __future__ import annotations

from linli.catalog.profile import ModbusPoint, get_profile
from linli.edge.readplan import plan_reads


def pt(field: str, address: int, dtype: str = "uint16", table: str = "holding") -> tuple[None, ModbusPoint]:
    return None, ModbusPoint.model_validate(
        {"field": field, "register": table, "address": address, "type": dtype}
    )


def test_adjacent_points_share_one_read() -> None:
    reads = plan_reads([pt("a", 0), pt("b", 1, "uint32"), pt("c", 3)])
    assert [(r.address, r.count) for r in reads] == [(0, 4)]
    assert [s.offset for s in reads[0].slots] == [0, 1, 3]


def test_gaps_up_to_max_gap_are_bridged() -> None:
    points = [pt("a", 0), pt("b", 10)]
    assert [(r.address, r.count) for r in plan_reads(points, max_gap=9)] == [(0, 11)]
    assert [(r.address, r.count) for r in plan_reads(points, max_gap=8)] == [(0, 1), (10, 1)]
    assert len(plan_reads([pt("a", 0), pt("b", 1)], max_gap=0)) == 1


def test_the_register_cap_splits_reads() -> None:
    points = [pt(f"p{i}", i) for i in range(300)]
    reads = plan_reads(points)
    assert [(r.address, r.count) for r in reads] == [(0, 125), (125, 125), (250, 50)]
    assert [(r.address, r.count) for r in plan_reads(points[:10], max_registers=4)] == [
        (0, 4),
        (4, 4),
        (8, 2),
    ]


def test_a_32_bit_value_is_never_split_across_reads() -> None:
    reads = plan_reads([pt("a", 0), pt("b", 3, "float32")], max_registers=4)
    assert [(r.address, r.count) for r in reads] == [(0, 1), (3, 2)]


def test_tables_are_read_separately() -> None:
    reads = plan_reads([pt("a", 0, table="input"), pt("b", 0), pt("c", 1, "bool", "coil")])
    assert [(r.table.value, r.address) for r in reads] == [("holding", 0), ("input", 0), ("coil", 1)]


def test_the_charger_takes_three_reads() -> None:
    profile = get_profile("charger")
    reads = plan_reads(profile.modbus_points(12))
    # Station inputs 0-6, the 12 port blocks 100-219 in one read, the two settings.
    assert [(r.table.value, r.address, r.count) for r in reads] == [
        ("holding", 0, 2),
        ("input", 0, 7),
        ("input", 100, 119),
    ]
    assert sum(len(r.slots) for r in reads) == len(profile.modbus_points(12))
