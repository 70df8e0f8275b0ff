"""Read planning: cover a device's points with as few Modbus reads as allowed.

Adjacent points in one table are merged into one read while the read stays within
the cap (125 registers or 2000 bits by the protocol, less for some gateways) and the
unused gap between two points is at most `max_gap` (some devices reject reads that
touch unmapped addresses; they set the gap to 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from linli.catalog.profile import ModbusPoint, Order, RegisterType
from linli.catalog.registers import BlockDecoder, DecodeError, Decoder, Value, compile_decoder
from linli.edge.blockrows import RowsInto, Run, compile_rows

PROTOCOL_MAX_REGISTERS = 125
PROTOCOL_MAX_BITS = 2000


@dataclass(frozen=True)
class Slot:
    """Where one point's value sits in a read: decoded from `offset`, tagged by `channel`."""

    channel: int | None
    offset: int
    decoder: Decoder


@dataclass
class Read:
    """One Modbus request: a table, a start address, a count, and the points it covers."""

    table: RegisterType
    address: int
    count: int
    slots: list[Slot] = field(default_factory=list)

    # Built at the first decode, from the slots as planned.
    _block: BlockDecoder | None = field(default=None, repr=False, compare=False)
    _runs: list[Run] = field(default_factory=list, repr=False, compare=False)
    _fast: RowsInto | None = field(default=None, repr=False, compare=False)

    @property
    def end(self) -> int:
        return self.address + self.count

    def decode(self, block: list[int]) -> list[Value | DecodeError]:
        """Each slot's value from the answer to this read, or the DecodeError it gave."""
        return self._decoder()(block)

    def rows_into(
        self,
        block: list[int],
        rows: dict[int | None, dict[str, Value]],
        bad: Callable[[int | None, DecodeError], None],
    ) -> None:
        """Add the answer's values to `rows` by channel and field, in slot order; give each
        value that did not decode to `bad` with its channel."""
        decoder = self._decoder()
        assert self._fast is not None
        if self._fast(block, rows):  # every value decoded: most blocks
            return
        values = decoder(block)
        if decoder.errors:
            for slot, value in zip(self.slots, values, strict=True):
                if isinstance(value, DecodeError):
                    bad(slot.channel, value)
                else:
                    rows.setdefault(slot.channel, {})[slot.decoder.field] = value
            return
        # Nothing failed: each channel's run of slots becomes its fields in one step.
        decoded = cast("list[Value]", values)
        for channel, start, stop, names in self._runs:
            row = rows.get(channel)
            if row is None:
                rows[channel] = dict(zip(names, decoded[start:stop], strict=True))
            else:
                row.update(zip(names, decoded[start:stop], strict=True))

    def _decoder(self) -> BlockDecoder:
        if self._block is None:  # once planned, a read's slots stay as they are
            self._block = BlockDecoder(self.count, [(s.offset, s.decoder) for s in self.slots])
            start = 0
            for index in range(1, len(self.slots) + 1):
                if index == len(self.slots) or self.slots[index].channel != self.slots[start].channel:
                    names = tuple(s.decoder.field for s in self.slots[start:index])
                    self._runs.append((self.slots[start].channel, start, index, names))
                    start = index
            self._fast = compile_rows(self._block, self._runs)
        return self._block


def plan_reads(
    points: Sequence[tuple[int | None, ModbusPoint]],
    *,
    max_registers: int = PROTOCOL_MAX_REGISTERS,
    max_gap: int = 16,
    byte_order: Order = Order.BIG,
    word_order: Order = Order.BIG,
) -> list[Read]:
    """Group `points` (channel, point) into reads, in table then address order."""
    reads: list[Read] = []
    by_table: dict[RegisterType, list[tuple[int | None, ModbusPoint]]] = {}
    for channel, point in points:
        by_table.setdefault(point.table, []).append((channel, point))
    for table in sorted(by_table, key=list(RegisterType).index):
        cap = PROTOCOL_MAX_BITS if table.is_bit else min(max_registers, PROTOCOL_MAX_REGISTERS)
        current: Read | None = None
        for channel, point in sorted(by_table[table], key=lambda cp: cp[1].address):
            size = point.type.registers
            start, end = point.address, point.address + size
            fits = (
                current is not None
                and start - current.end <= max_gap
                and max(end, current.end) - current.address <= cap
            )
            if current is None or not fits:
                current = Read(table, start, size)
                reads.append(current)
            else:
                current.count = max(current.count, end - current.address)
            decoder = compile_decoder(point, byte_order, word_order)
            current.slots.append(Slot(channel, start - current.address, decoder))
    return reads
