"""linli's register responses decode exactly as pymodbus's own do, and refuse the same frames."""

from __future__ import annotations

import random
import struct

import pytest
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

from linli.edge.registerpdu import HoldingRegisters, InputRegisters


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(HoldingRegisters, ReadHoldingRegistersResponse), (InputRegisters, ReadInputRegistersResponse)],
)
def test_the_same_registers_as_pymodbus_and_the_same_function_code(
    ours: type[ReadHoldingRegistersResponse], theirs: type[ReadHoldingRegistersResponse]
) -> None:
    rng = random.Random(7)
    assert ours.function_code == theirs.function_code
    for count in (0, 1, 2, 63, 125):
        regs = [rng.randrange(0x10000) for _ in range(count)]
        data = bytes([2 * count]) + struct.pack(f">{count}H", *regs)
        mine, reference = ours(), theirs()
        mine.decode(data)
        reference.decode(data)
        assert mine.registers == reference.registers == regs
    # An odd byte count: both drop the half register.
    data = bytes([5]) + bytes(range(1, 6))
    mine, reference = ours(), theirs()
    mine.decode(data)
    reference.decode(data)
    assert mine.registers == reference.registers == [0x0102, 0x0304]


def test_a_byte_count_beyond_the_frame_is_refused_as_pymodbus_refuses_it() -> None:
    data = bytes([10, 0, 1, 0, 2])  # says 10 bytes, carries 4
    with pytest.raises(ModbusIOException, match="byte_count 10"):
        ReadHoldingRegistersResponse().decode(data)
    with pytest.raises(ModbusIOException, match="byte_count 10"):
        HoldingRegisters().decode(data)


def test_its_debug_text_names_the_count_not_every_register() -> None:
    pdu = HoldingRegisters()
    pdu.decode(bytes([250]) + bytes(250))
    pdu.dev_id = 7
    assert str(pdu) == "HoldingRegisters(dev_id=7, registers=125)"
