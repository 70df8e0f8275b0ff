"""Serve simulated devices over real Modbus TCP (pymodbus), one unit id each.

Every request first brings the device up to the simulated present, then answers from
its register image, rebuilt only when something changed. Writes to coils and holding
registers go to the device's own command handling. Faults can be injected per unit:
`exception` answers every request with exception 4 (device failure), `silent` never
answers, `slow` answers after `slow_s` seconds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from linli.catalog.profile import Profile, RegisterType
from linli.catalog.registers import Value
from linli.sim.clock import SimClock
from linli.sim.image import build_image, table_sizes

log = logging.getLogger(__name__)

# pymodbus logs every frame at debug level and deprecations at warning; keep the console for us.
logging.getLogger("pymodbus").setLevel(logging.ERROR)

_TABLE_BY_FUNCTION = {
    1: RegisterType.COIL,
    5: RegisterType.COIL,
    15: RegisterType.COIL,
    2: RegisterType.DISCRETE,
    3: RegisterType.HOLDING,
    6: RegisterType.HOLDING,
    16: RegisterType.HOLDING,
    23: RegisterType.HOLDING,
    4: RegisterType.INPUT,
}


def _quiet_for_missing_units(server: ModbusTcpServer) -> None:
    """Make an unknown unit id raise NoSuchIdException, which `ignore_missing_devices` keeps quiet.

    pymodbus's SimCore looks a missing unit up as unit 0 and fails with a KeyError, answered as
    exception 4 (device failure): no serial gateway says that for a unit that is not on its bus.
    """
    core = server.context
    if not isinstance(core, SimCore):
        return
    devices = core.devices

    def lookup(device_id: int) -> object:
        if device_id in devices:
            return devices[device_id]
        if 0 in devices:
            return devices[0]
        raise NoSuchIdException(f"no unit {device_id}")

    core._SimCore__get_device = lookup  # type: ignore[attr-defined]


class Fault(StrEnum):
    """What a simulated device does wrong, for tests and drills."""

    NONE = "none"
    EXCEPTION = "exception"
    SILENT = "silent"
    SLOW = "slow"


class SimulatedDevice(Protocol):
    """What the server needs of a device model."""

    profile: Profile
    count: int

    def advance_to(self, t: float) -> bool: ...

    def values(self) -> dict[tuple[int | None, str], Value]: ...

    def write(self, table: RegisterType, address: int, values: list[int]) -> bool: ...


def _pack_bits(bits: list[int]) -> list[int]:
    """Bits to 16-bit registers, least significant bit first (pymodbus' bit-block layout)."""
    words = []
    for i in range(0, len(bits), 16):
        word = 0
        for j, bit in enumerate(bits[i : i + 16]):
            if bit:
                word |= 1 << j
        words.append(word)
    return words


@dataclass
class Served:
    """One device at one unit id, with its cached register image and injected fault."""

    device: SimulatedDevice
    unit: int
    fault: Fault = Fault.NONE
    slow_s: float = 2.0
    requests: int = 0
    _image: dict[RegisterType, list[int]] = field(default_factory=dict)
    _dirty: bool = True

    def image(self, clock: SimClock) -> dict[RegisterType, list[int]]:
        if self.device.advance_to(clock.now()) or self._dirty or not self._image:
            raw = build_image(self.device.profile, self.device.values(), self.device.count)
            self._image = {table: _pack_bits(regs) if table.is_bit else regs for table, regs in raw.items()}
            self._dirty = False
        return self._image

    def invalidate(self) -> None:
        """The device changed outside its own steps (a fault struck): read it afresh."""
        self._dirty = True


async def _action(  # noqa: PLR0917 (pymodbus calls it positionally)
    served: Served,
    clock: SimClock,
    function_code: int,
    _start_address: int,
    address: int,
    _count: int,
    registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    served.requests += 1
    if served.fault is Fault.EXCEPTION:
        return ExcCodes.DEVICE_FAILURE
    if served.fault is Fault.SILENT:
        await asyncio.sleep(3600)
    if served.fault is Fault.SLOW:
        await asyncio.sleep(served.slow_s)
    table = _TABLE_BY_FUNCTION.get(function_code)
    if table is None:
        return ExcCodes.ILLEGAL_FUNCTION
    if set_values is not None:
        served.device.advance_to(clock.now())
        if not served.device.write(table, address, [int(v) for v in set_values]):
            return ExcCodes.ILLEGAL_ADDRESS
        served._dirty = True
        return None
    image = served.image(clock)[table]
    registers[: len(image)] = image
    return None


def sim_device(served: Served, clock: SimClock) -> SimDevice:
    """The pymodbus device for one served unit: four separate tables, our action on each access."""
    sizes = table_sizes(served.device.profile, served.device.count)

    def bits(n: int) -> list[SimData]:
        return [SimData(0, count=((n + 15) // 16) * 16, values=False, datatype=DataType.BITS)]

    def regs(n: int) -> list[SimData]:
        return [SimData(0, count=n, values=0, datatype=DataType.REGISTERS)]

    return SimDevice(
        served.unit,
        simdata=(
            bits(sizes[RegisterType.COIL]),
            bits(sizes[RegisterType.DISCRETE]),
            regs(sizes[RegisterType.HOLDING]),
            regs(sizes[RegisterType.INPUT]),
        ),
        action=functools.partial(_action, served, clock),
    )


class DeviceServer:
    """A Modbus TCP server for the devices behind one address (a device or a gateway)."""

    def __init__(self, host: str, port: int, devices: list[Served], clock: SimClock) -> None:
        self.host = host
        self.port = port
        self.devices = {d.unit: d for d in devices}
        self.clock = clock
        self._server: ModbusTcpServer | None = None

    async def start(self) -> None:
        units = [sim_device(d, self.clock) for d in self.devices.values()]
        # A unit id nobody has gets no answer, as behind a serial gateway whose bus is quiet.
        self._server = ModbusTcpServer(units, address=(self.host, self.port), ignore_missing_devices=True)
        _quiet_for_missing_units(self._server)
        try:
            await self._server.serve_forever(background=True)
        except RuntimeError as exc:
            self._server = None
            raise OSError(f"cannot listen on {self.host}:{self.port}: is the port in use?") from exc

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    def advance(self) -> None:
        """Move every device to the present (called periodically so steps stay small)."""
        now = self.clock.now()
        for served in self.devices.values():
            if served.device.advance_to(now):
                served._dirty = True
