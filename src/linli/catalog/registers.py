"""Register codec: the bits of Modbus registers to numbers and back.

Knows data types, byte order, word order, bit fields, scale and offset; knows nothing
of connections. Decoders are compiled once per point because the poller runs them
thousands of times a second.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from linli.catalog.profile import DataType, ModbusPoint, Order

Value = int | float

_FORMATS = {
    DataType.INT16: ">h",
    DataType.UINT16: ">H",
    DataType.INT32: ">i",
    DataType.UINT32: ">I",
    DataType.FLOAT32: ">f",
}

_RANGES = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
}


class DecodeError(ValueError):
    """A register value that is no usable number (NaN, infinity, out of the valid range)."""

    def __init__(self, field: str, reason: str, detail: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {detail}")


def _swap16(reg: int) -> int:
    return ((reg & 0xFF) << 8) | (reg >> 8)


def registers_to_bytes(regs: Sequence[int], byte_order: Order, word_order: Order) -> bytes:
    """Lay registers out as big-endian bytes of the value, undoing the device's orders."""
    ordered = list(regs) if word_order is Order.BIG else list(reversed(regs))
    if byte_order is Order.LITTLE:
        ordered = [_swap16(r) for r in ordered]
    return b"".join(r.to_bytes(2, "big") for r in ordered)


def bytes_to_registers(data: bytes, byte_order: Order, word_order: Order) -> list[int]:
    """The inverse of registers_to_bytes."""
    regs = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if byte_order is Order.LITTLE:
        regs = [_swap16(r) for r in regs]
    return regs if word_order is Order.BIG else list(reversed(regs))


def _power_of_ten_divisor(scale: float) -> int | None:
    """10 for 0.1, 100 for 0.01: dividing by it gives the shortest exact decimal."""
    if scale >= 1:
        return None
    inverse = 1 / scale
    rounded = round(inverse)
    if abs(inverse - rounded) < 1e-9 and rounded in (10, 100, 1000, 10000, 100000, 1000000):
        return rounded
    return None


@dataclass(frozen=True)
class Plain:
    """How to finish a point whose registers `struct` can unpack beside its neighbours'
    (big-endian bytes and words, no bit field): the `Decoder.fn` steps, spelled out."""

    code: str  # the struct code of its type
    integer: bool  # stored as read, unscaled
    is_float: bool
    divisor: int | None  # for a power-of-ten scale: dividing gives the shortest decimal
    scale: float
    offset: float
    lo: float | None
    hi: float | None


@dataclass(frozen=True)
class Decoder:
    """Decodes one point from the registers of a read block."""

    field: str
    registers: int
    fn: Callable[[Sequence[int], int], Value]
    plain: Plain | None = None  # set when a BlockDecoder can take it with its neighbours

    def __call__(self, block: Sequence[int], offset: int) -> Value:
        return self.fn(block, offset)


def compile_decoder(
    point: ModbusPoint, default_byte_order: Order = Order.BIG, default_word_order: Order = Order.BIG
) -> Decoder:
    """Build the decoder for `point`, resolving its orders against the map's defaults."""
    dtype = point.type
    field = point.field
    if dtype is DataType.BOOL:
        return Decoder(field, 1, lambda block, off: 1 if block[off] else 0)
    byte_order = point.byte_order or default_byte_order
    word_order = point.word_order or default_word_order
    fmt = struct.Struct(_FORMATS[dtype])
    n = dtype.registers

    is_float = dtype is DataType.FLOAT32
    fast = _fast_integer(dtype, byte_order, word_order)

    def raw(block: Sequence[int], off: int) -> Value:
        if fast is not None:
            return fast(block, off)
        data = registers_to_bytes(block[off : off + n], byte_order, word_order)
        value: Value = fmt.unpack(data)[0]
        if is_float and math.isfinite(value):
            # A float32 carries 7 significant digits; more would be noise in storage and on screen.
            value = float(f"{value:.7g}")
        return value

    if point.bit is not None:
        bit = point.bit
        if byte_order is Order.BIG:
            # Status words are big-endian nearly always: the word's bit, without its bytes.
            if n == 1:
                return Decoder(field, n, lambda block, off: (block[off] >> bit) & 1)
            high, low = (0, 1) if word_order is Order.BIG else (1, 0)
            return Decoder(
                field, n, lambda block, off: (((block[off + high] << 16) | block[off + low]) >> bit) & 1
            )
        unsigned = struct.Struct(">H" if n == 1 else ">I")

        def bit_value(block: Sequence[int], off: int) -> Value:
            data = registers_to_bytes(block[off : off + n], byte_order, word_order)
            return (int(unsigned.unpack(data)[0]) >> bit) & 1

        return Decoder(field, n, bit_value)

    lo, hi = point.valid_min, point.valid_max
    scaled = _scaler(point)

    def value(block: Sequence[int], off: int) -> Value:
        v = scaled(raw(block, off))
        if isinstance(v, float) and not math.isfinite(v):
            raise DecodeError(field, "not_finite", f"value is {v}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise DecodeError(field, "out_of_range", f"value {v} outside [{lo}, {hi}]")
        return v

    plain = None
    if byte_order is Order.BIG and (word_order is Order.BIG or n == 1):
        divisor = None if point.is_integer else _power_of_ten_divisor(point.scale)
        plain = Plain(
            _FORMATS[dtype][1], point.is_integer, is_float, divisor, point.scale, point.offset, lo, hi
        )
    return Decoder(field, n, value, plain)


class BlockDecoder:
    """Decodes every point of one read block, the plain ones with one `struct` call.

    The same values and the same DecodeErrors as calling each point's Decoder, at about a
    third of the cost: the poller decodes every point of every device at every poll.
    """

    def __init__(self, count: int, slots: Sequence[tuple[int, Decoder]]) -> None:
        """`count` registers in the block; `slots` the (offset, decoder) of each point."""
        self.count = count
        self.pack = struct.Struct(f">{count}H").pack
        # Plain points in address order that do not overlap go into one struct format.
        taken: dict[int, int] = {}  # slot index -> position among the unpacked values
        fmt, end = ">", 0
        for index, (offset, decoder) in sorted(enumerate(slots), key=lambda item: item[1][0]):
            if decoder.plain is None or offset < end or offset + decoder.registers > count:
                continue
            fmt += f"{2 * (offset - end)}x" if offset > end else ""
            fmt += decoder.plain.code
            taken[index] = len(taken)
            end = offset + decoder.registers
        # From the packed block: the values of the plain points, `unpacked` of them.
        self.unpack = struct.Struct(fmt).unpack_from if taken else None
        self.unpacked = len(taken)
        # Each slot's position among the unpacked values (-1: decoded alone), offset and decoder.
        self.steps = [
            (taken.get(index, -1), offset, decoder, decoder.plain)
            for index, (offset, decoder) in enumerate(slots)
        ]
        self.errors = 0  # DecodeErrors in the last block decoded

    def __call__(self, block: Sequence[int]) -> list[Value | DecodeError]:
        """Each slot's value, or the DecodeError it gave, in slot order."""
        unpack = self.unpack
        whole = len(block) >= self.count  # else each point alone, failing as its Decoder fails
        raws: tuple[Value, ...] = unpack(self.pack(*block[: self.count])) if unpack and whole else ()
        out: list[Value | DecodeError] = []
        errors = 0
        for position, offset, decoder, plain in self.steps:
            if position < 0 or plain is None or not whole:
                try:
                    out.append(decoder.fn(block, offset))
                except DecodeError as exc:
                    out.append(exc)
                    errors += 1
                continue
            # The steps of compile_decoder's `raw`, `_scaler` and `value`, inline.
            v = raws[position]
            if plain.is_float and math.isfinite(v):
                v = float(f"{v:.7g}")
            if not plain.integer:
                v = v / plain.divisor + plain.offset if plain.divisor else v * plain.scale + plain.offset
            if type(v) is float and not math.isfinite(v):
                out.append(DecodeError(decoder.field, "not_finite", f"value is {v}"))
                errors += 1
            elif (plain.lo is not None and v < plain.lo) or (plain.hi is not None and v > plain.hi):
                out.append(
                    DecodeError(decoder.field, "out_of_range", f"value {v} outside [{plain.lo}, {plain.hi}]")
                )
                errors += 1
            else:
                out.append(v)
        self.errors = errors
        return out


def _fast_integer(
    dtype: DataType, byte_order: Order, word_order: Order
) -> Callable[[Sequence[int], int], int] | None:
    """Integer arithmetic for the common big-endian layouts: the poller's hot path."""
    if byte_order is not Order.BIG:
        return None
    hi, lo = (0, 1) if word_order is Order.BIG else (1, 0)
    if dtype is DataType.UINT16:
        return lambda b, o: b[o]
    if dtype is DataType.INT16:
        return lambda b, o: b[o] - 0x10000 if b[o] & 0x8000 else b[o]
    if dtype is DataType.UINT32:
        return lambda b, o: (b[o + hi] << 16) | b[o + lo]
    if dtype is DataType.INT32:

        def int32(b: Sequence[int], o: int) -> int:
            v = (b[o + hi] << 16) | b[o + lo]
            return v - 0x1_0000_0000 if v & 0x8000_0000 else v

        return int32
    return None


def _scaler(point: ModbusPoint) -> Callable[[Value], Value]:
    if point.is_integer:
        return lambda v: v
    scale, offset = point.scale, point.offset
    divisor = _power_of_ten_divisor(scale)
    if divisor is not None:
        return lambda v: v / divisor + offset
    return lambda v: v * scale + offset


def encode(
    point: ModbusPoint,
    value: Value,
    default_byte_order: Order = Order.BIG,
    default_word_order: Order = Order.BIG,
) -> list[int]:
    """Registers that hold `value` for `point` (the simulator's side).

    Bit-field points are encoded by the caller, who owns the rest of the word.
    Integer values are rounded and clamped to the type's range, as a device would.
    """
    dtype = point.type
    if dtype is DataType.BOOL:
        return [1 if value else 0]
    if point.bit is not None:
        raise ValueError(f"{point.field}: encode bit fields with encode_bits")
    byte_order = point.byte_order or default_byte_order
    word_order = point.word_order or default_word_order
    raw = (value - point.offset) / point.scale
    if dtype is DataType.FLOAT32:
        data = struct.pack(">f", raw)
    else:
        lo, hi = _RANGES[dtype]
        data = struct.pack(_FORMATS[dtype], max(lo, min(hi, round(raw))))
    return bytes_to_registers(data, byte_order, word_order)


def encode_bits(bits: dict[int, bool]) -> int:
    """One 16-bit register from its set bits."""
    word = 0
    for bit, on in bits.items():
        if on:
            word |= 1 << bit
    return word
