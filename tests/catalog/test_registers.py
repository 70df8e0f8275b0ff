"""Register decoding: every data type, byte order and word order, from hand-made registers."""

from __future__ import annotations

import math
import struct

import pytest

from linli.catalog.profile import DataType, ModbusPoint, Order, RegisterType
from linli.catalog.registers import DecodeError, bytes_to_registers, compile_decoder, encode


def point(dtype: str, **kw: object) -> ModbusPoint:
    table = "coil" if dtype == "bool" else "holding"
    return ModbusPoint.model_validate({"field": "x", "register": table, "address": 0, "type": dtype, **kw})


# (type, byte order, word order, registers as the device sends them, expected value)
CASES = [
    ("uint16", "big", "big", [0x1234], 0x1234),
    ("uint16", "little", "big", [0x3412], 0x1234),
    ("int16", "big", "big", [0xFFFF], -1),
    ("int16", "big", "big", [0x8000], -32768),
    ("int16", "little", "big", [0x0080], -32768),
    ("uint32", "big", "big", [0x0001, 0x0002], 65538),
    ("uint32", "big", "little", [0x0002, 0x0001], 65538),
    ("uint32", "little", "big", [0x0100, 0x0200], 65538),
    ("uint32", "little", "little", [0x0200, 0x0100], 65538),
    ("int32", "big", "big", [0xFFFF, 0xFFFE], -2),
    ("int32", "big", "little", [0xFFFE, 0xFFFF], -2),
    ("int32", "little", "little", [0xFEFF, 0xFFFF], -2),
    ("int32", "big", "big", [0x8000, 0x0000], -(2**31)),
    # 230.5 as IEEE float32 is 0x43668000
    ("float32", "big", "big", [0x4366, 0x8000], 230.5),
    ("float32", "big", "little", [0x8000, 0x4366], 230.5),
    ("float32", "little", "big", [0x6643, 0x0080], 230.5),
    ("float32", "little", "little", [0x0080, 0x6643], 230.5),
    # -1.5 is 0xBFC00000
    ("float32", "big", "big", [0xBFC0, 0x0000], -1.5),
]


@pytest.mark.parametrize(("dtype", "byte_order", "word_order", "regs", "expected"), CASES)
def test_decode_every_type_and_order(
    dtype: str, byte_order: str, word_order: str, regs: list[int], expected: float
) -> None:
    p = point(dtype, byte_order=byte_order, word_order=word_order)
    decoder = compile_decoder(p)
    assert decoder.registers == len(regs)
    # The value sits at an offset inside a larger read block.
    assert decoder([0xAAAA, *regs, 0x5555], 1) == expected


@pytest.mark.parametrize(("dtype", "byte_order", "word_order", "regs", "expected"), CASES)
def test_encode_is_the_inverse(
    dtype: str, byte_order: str, word_order: str, regs: list[int], expected: float
) -> None:
    p = point(dtype, byte_order=byte_order, word_order=word_order)
    assert encode(p, expected) == regs


def test_orders_default_to_the_maps() -> None:
    p = point("uint32")
    assert compile_decoder(p, Order.BIG, Order.LITTLE)([0x0002, 0x0001], 0) == 65538


def test_float32_nan_and_infinity_are_rejected_with_a_reason() -> None:
    nan = list(struct.unpack(">HH", struct.pack(">f", math.nan)))
    inf = [0x7F80, 0x0000]
    for regs in (nan, inf):
        with pytest.raises(DecodeError) as info:
            compile_decoder(point("float32"))(regs, 0)
        assert info.value.reason == "not_finite"
        assert info.value.field == "x"


def test_scale_and_offset_give_exact_decimals() -> None:
    assert compile_decoder(point("uint16", scale=0.1))([2297], 0) == 229.7
    assert compile_decoder(point("int16", scale=0.1))([0xFFE0], 0) == -3.2
    assert compile_decoder(point("uint32", scale=0.01))([0, 37], 0) == 0.37
    assert compile_decoder(point("uint16", scale=0.5, offset=-40))([100], 0) == 10.0
    # An unscaled integer type stays an integer (stored with the `i` suffix).
    value = compile_decoder(point("uint16"))([7], 0)
    assert value == 7
    assert isinstance(value, int)


def test_bit_fields() -> None:
    word = [0b0000_0000_0000_0101]
    assert [compile_decoder(point("uint16", bit=b))(word, 0) for b in range(4)] == [1, 0, 1, 0]
    # Bit 17 of a 32-bit big-endian word lives in the first register.
    assert compile_decoder(point("uint32", bit=17))([0x0002, 0x0000], 0) == 1


@pytest.mark.parametrize("dtype", ["uint16", "int16", "uint32", "int32"])
@pytest.mark.parametrize("byte_order", ["big", "little"])
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_every_bit_of_every_word_in_every_order(dtype: str, byte_order: str, word_order: str) -> None:
    # The word as the device means it, then its registers as the device's orders lay them out.
    size = DataType(dtype).registers
    for word in (0x0000_0001, 0x8000_0000 >> (32 - 16 * size), 0xA5C3_5A3C & (2 ** (16 * size) - 1)):
        regs = bytes_to_registers(word.to_bytes(2 * size, "big"), Order(byte_order), Order(word_order))
        for bit in range(16 * size):
            spec = {"bit": bit, "byte_order": byte_order, "word_order": word_order}
            got = compile_decoder(point(dtype, **spec))([7, *regs, 9], 1)
            assert got == (word >> bit) & 1, (word, bit)


def test_bool_points_read_coils() -> None:
    decoder = compile_decoder(point("bool"))
    assert (decoder([0, 1], 0), decoder([0, 1], 1)) == (0, 1)


def test_valid_range_rejects_with_a_reason() -> None:
    p = point("uint16", valid_max=2500)
    assert compile_decoder(p)([2500], 0) == 2500
    with pytest.raises(DecodeError) as info:
        compile_decoder(p)([2501], 0)
    assert info.value.reason == "out_of_range"


def test_encode_clamps_like_a_device() -> None:
    assert encode(point("uint16"), 70000) == [0xFFFF]
    assert encode(point("int16"), -40000) == [0x8000]


def test_datatype_sizes() -> None:
    assert [DataType(t).registers for t in ("int16", "uint16", "int32", "uint32", "float32")] == [
        1,
        1,
        2,
        2,
        2,
    ]
    assert RegisterType.COIL.is_bit
    assert not RegisterType.INPUT.is_bit


def test_float32_keeps_only_its_own_precision() -> None:
    # 4959.474 as float32 is 4959.4736328125; the stored value must not claim those digits.
    regs = encode(point("float32"), 4959.474)
    assert compile_decoder(point("float32"))(regs, 0) == 4959.474
