"""A read's own decoding function against the general decoder, over every built-in profile.

Blocks are mostly good values (each point's own, encoded as a device would send it) with a
few registers of garbage, so that both the function's common case and its way back to the
general decoder are taken.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linli.catalog.profile import DataType, ModbusPoint, Profile, builtin_profiles
from linli.catalog.registers import BlockDecoder, DecodeError, Value, encode
from linli.edge.blockrows import compile_rows
from linli.edge.config import DeviceConfig
from linli.edge.modbus import DevicePoller, Endpoint
from linli.edge.readplan import Read

MODBUS = [p for p in builtin_profiles().values() if p.modbus is not None]
# Registers of garbage, the words that make a float32 infinite or NaN and a signed value extreme
# among them.
GARBAGE = st.integers(0, 65535) | st.sampled_from([0x7F80, 0x7FC0, 0xFF80, 0xFFFF, 0x8000, 0])
T = 1_790_000_000_000
Rows = dict[int | None, dict[str, Value]]


def poller(profile: Profile) -> DevicePoller:
    device = DeviceConfig(id="d", profile=profile.kind, count=3 if profile.group_tag else None)
    return DevicePoller(
        site="s", device=device, profile=profile, endpoint=Endpoint("127.0.0.1", 1, 0.1), emit=lambda _: None
    )


def draw_block(data: Any, profile: Profile, read: Read, count: int | None) -> list[int]:
    """Garbage, over which most points get a value of their own within their valid range."""
    points = {(c, p.field): p for c, p in profile.modbus_points(count)}
    block: list[int] = data.draw(st.lists(GARBAGE, min_size=read.count, max_size=read.count))
    for slot in read.slots:
        point: ModbusPoint = points[slot.channel, slot.decoder.field]
        if point.bit is not None or point.type is DataType.BOOL or data.draw(st.integers(0, 9)) == 0:
            continue  # any bit is good; one value in ten left as garbage
        lo = point.valid_min if point.valid_min is not None else -100.0
        hi = point.valid_max if point.valid_max is not None else 100_000.0
        value = data.draw(st.floats(lo, hi, allow_nan=False))
        block[slot.offset : slot.offset + point.type.registers] = encode(point, value)
    return block


def general(read: Read, block: list[int]) -> tuple[Rows, list[tuple[int | None, str, str]]]:
    """The rows and refusals as the general decoder gives them, one slot at a time."""
    rows: Rows = {}
    bad = []
    for slot, value in zip(read.slots, read.decode(block), strict=True):
        if isinstance(value, DecodeError):
            bad.append((slot.channel, value.field, str(value)))
        else:
            rows.setdefault(slot.channel, {})[slot.decoder.field] = value
    return rows, bad


def rows_into(read: Read, block: list[int]) -> tuple[Rows, list[tuple[int | None, str, str]]]:
    """The rows and refusals as the read gives them (its function, or the general decoder)."""
    rows: Rows = {}
    bad: list[tuple[int | None, str, str]] = []
    read.rows_into(block, rows, lambda c, exc: bad.append((c, exc.field, str(exc))))
    return rows, bad


def ordered(rows: Rows) -> list[tuple[int | None, list[tuple[str, str, Value]]]]:
    """Rows with their order and each value's type: what a line is formatted from."""
    return [(c, [(k, type(v).__name__, v) for k, v in row.items()]) for c, row in rows.items()]


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(st.sampled_from(MODBUS), st.data())
def test_a_reads_function_gives_the_general_decoders_rows(profile: Profile, data: Any) -> None:
    p = poller(profile)
    for read in p.reads:
        block = draw_block(data, profile, read, p.device.count)
        want, want_bad = general(read, block)
        rows, bad = rows_into(read, block)
        assert ordered(rows) == ordered(want)
        assert bad == want_bad
        # The function itself: it takes a block exactly when every value decodes.
        runs = [(s.channel, i, i + 1, (s.decoder.field,)) for i, s in enumerate(read.slots)]
        fast = compile_rows(BlockDecoder(read.count, [(s.offset, s.decoder) for s in read.slots]), runs)
        mine: Rows = {None: {"kept": 1}}
        expect: Rows = {None: {"kept": 1}}
        if not want_bad:  # added to what the rows held; else they are left as they were
            for channel, row in want.items():
                expect.setdefault(channel, {}).update(row)
        assert fast(block, mine) is (not want_bad)
        assert ordered(mine) == ordered(expect)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(st.sampled_from(MODBUS), st.data())
def test_a_poll_stores_and_counts_as_the_general_decoder_does(profile: Profile, data: Any) -> None:
    new, old = poller(profile), poller(profile)
    for read in old.reads:  # the general decoder only: the function never takes a block
        read.decode([0] * read.count)
        read._fast = lambda block, rows: False
    blocks = [draw_block(data, profile, read, new.device.count) for read in new.reads]
    assert new.decode(blocks, T) == old.decode(blocks, T)
    assert new.health.errors == old.health.errors
    assert new.last == old.last


def good_block(profile: Profile, read: Read, count: int | None) -> list[int]:
    """Every point at the middle of its valid range (or a small value when it has none)."""
    points = {(c, p.field): p for c, p in profile.modbus_points(count)}
    block = [0] * read.count
    for slot in read.slots:
        point = points[slot.channel, slot.decoder.field]
        if point.bit is None and point.type is not DataType.BOOL:
            lo, hi = point.valid_min, point.valid_max
            middle = (lo + hi) / 2 if lo is not None and hi is not None else (lo or hi or 0.0) + 1.0
            block[slot.offset : slot.offset + point.type.registers] = encode(point, middle)
    return block


def test_each_bad_value_of_each_profile_goes_to_the_general_decoder() -> None:
    for profile in MODBUS:
        p = poller(profile)
        points = {(c, pt.field): pt for c, pt in profile.modbus_points(p.device.count)}
        for read in p.reads:
            good = good_block(profile, read, p.device.count)
            fast = compile_rows(
                BlockDecoder(read.count, [(s.offset, s.decoder) for s in read.slots]), read_runs(read)
            )
            assert fast(good, {}), (profile.kind, read)  # the common case is the function's
            for slot in read.slots:
                point = points[slot.channel, slot.decoder.field]
                if point.bit is not None or point.type is DataType.BOOL:
                    continue
                span = slice(slot.offset, slot.offset + point.type.registers)
                bad = [math.inf, -math.inf, math.nan] if point.type is DataType.FLOAT32 else []
                bad += [v + d for v, d in ((point.valid_min, -1.0), (point.valid_max, 1.0)) if v is not None]
                for value in bad:
                    block = list(good)
                    block[span] = encode(point, value)
                    want, want_bad = general(read, block)
                    rows, refused = rows_into(read, block)
                    assert (ordered(rows), refused) == (ordered(want), want_bad), (
                        profile.kind,
                        point.field,
                        value,
                    )
                    assert fast(block, {}) is (not want_bad)


def read_runs(read: Read) -> list[tuple[int | None, int, int, tuple[str, ...]]]:
    return [(s.channel, i, i + 1, (s.decoder.field,)) for i, s in enumerate(read.slots)]
