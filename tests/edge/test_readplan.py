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


def test_rows_by_channel_in_slot_order_and_a_bad_value_left_out() -> None:
    def point(channel: int | None, field: str, address: int, **kw: object) -> tuple[int | None, ModbusPoint]:
        spec = {"field": field, "register": "holding", "address": address, "type": "uint16", **kw}
        return channel, ModbusPoint.model_validate(spec)

    points = [
        point(None, "mode", 0),
        point(1, "power", 1, scale=0.1),
        point(1, "state", 2, valid_max=5),
        point(2, "power", 3, scale=0.1),
        point(2, "state", 4, valid_max=5),
        point(None, "limit", 5),
    ]
    (read,) = plan_reads(points)
    rows: dict[int | None, dict[str, float]] = {}
    bad: list[tuple[int | None, str, str]] = []
    read.rows_into([7, 1234, 2, 0, 1, 80], rows, lambda ch, exc: bad.append((ch, exc.field, exc.reason)))
    assert rows == {
        None: {"mode": 7, "limit": 80},
        1: {"power": 123.4, "state": 2},
        2: {"power": 0.0, "state": 1},
    }
    assert [list(row) for row in rows.values()] == [["mode", "limit"], ["power", "state"], ["power", "state"]]
    assert bad == []
    # Port 2's state out of its range: dropped and told, the rest as before.
    rows.clear()
    read.rows_into([7, 1234, 2, 0, 9, 80], rows, lambda ch, exc: bad.append((ch, exc.field, exc.reason)))
    assert rows == {None: {"mode": 7, "limit": 80}, 1: {"power": 123.4, "state": 2}, 2: {"power": 0.0}}
    assert bad == [(2, "state", "out_of_range")]
