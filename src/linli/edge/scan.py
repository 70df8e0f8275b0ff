"""Which unit ids answer on a Modbus gateway, and (for a profile) whether their answer decodes.

Polite: one request at a time on one connection, a short timeout, nothing written. Without a
profile a unit is asked for one holding register; any answer, a Modbus exception included,
means something is there. With a profile the unit is polled as the agent would poll it, and
its answer is plausible when every value decodes within its valid range.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from pymodbus.exceptions import ModbusException

from linli.catalog.profile import Profile
from linli.edge.config import DeviceConfig
from linli.edge.modbus import MODBUS_EXCEPTIONS, DevicePoller, Endpoint, PollError


class Answer(StrEnum):
    DECODES = "decodes"  # a profile's reads answered, every value in range
    IMPLAUSIBLE = "implausible"  # answered, but values out of range: another kind of device?
    PRESENT = "present"  # answered (without a profile, or with a Modbus exception)
    SILENT = "silent"  # no answer within the timeout
    FAILED = "failed"  # the gateway itself: refused, closed, malformed


@dataclass(frozen=True)
class Found:
    unit: int
    answer: Answer
    detail: str = ""
    fields: Mapping[str, object] = field(default_factory=dict)

    @property
    def someone(self) -> bool:
        return self.answer in (Answer.DECODES, Answer.IMPLAUSIBLE, Answer.PRESENT)


def parse_units(text: str) -> list[int]:
    """`1-247`, `1,2,5-9`: unit ids in order, each once; ValueError says what is wrong."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"units '{text}': write them as 1-247 or 1,2,5-9") from None
        if not 0 <= first <= last <= 255:
            raise ValueError(f"units '{text}': each id from 0 to 255, the range low to high")
        out += [u for u in range(first, last + 1) if u not in out]
    return out


async def scan(
    host: str,
    port: int,
    units: Iterable[int],
    profile: Profile | None,
    *,
    wait_s: float = 0.3,
    progress: Callable[[Found], None] = lambda _: None,
) -> list[Found]:
    """Ask each unit in turn; `progress` hears of each as it is done."""
    endpoint = Endpoint(host, port, wait_s)
    out = []
    try:
        for unit in units:
            found = await (_poll(endpoint, unit, profile, wait_s) if profile else _ask(endpoint, unit))
            out.append(found)
            progress(found)
            if found.answer is Answer.FAILED and "refused" in found.detail:
                break  # no gateway there at all: every other unit would say the same
    finally:
        endpoint.close()
    return out


async def _ask(endpoint: Endpoint, unit: int) -> Found:
    try:
        client = await endpoint.client()
        resp = await client.read_holding_registers(0, count=1, device_id=unit)
    except PollError as exc:
        return Found(unit, Answer.FAILED, f"{exc.reason}: {exc}")
    except (ModbusException, OSError):
        reason, detail = endpoint.failure()
        endpoint.reset()
        return _silent_or_failed(unit, reason, detail)
    if resp.isError():
        code = resp.exception_code
        text = MODBUS_EXCEPTIONS.get(code, "unknown")
        if code in (10, 11):  # the gateway answers for a unit behind it that did not
            return Found(unit, Answer.SILENT, f"gateway: exception {code} ({text})")
        return Found(unit, Answer.PRESENT, f"exception {code} ({text}) to holding 0")
    return Found(unit, Answer.PRESENT, f"holding 0 = {resp.registers[0]}")


async def _poll(endpoint: Endpoint, unit: int, profile: Profile, wait_s: float) -> Found:
    device = DeviceConfig(id=f"unit-{unit}", profile=profile.kind, unit=unit, timeout=wait_s, interval=1.0)
    poller = DevicePoller(site="scan", device=device, profile=profile, endpoint=endpoint, emit=lambda _: None)
    try:
        blocks = await poller.poll()
    except PollError as exc:
        if exc.reason.startswith("exception_"):
            code = int(exc.reason.removeprefix("exception_"))
            if code in (10, 11):
                return Found(unit, Answer.SILENT, str(exc))
            return Found(unit, Answer.PRESENT, f"answers, but not as a {profile.kind}: {exc}")
        return _silent_or_failed(unit, exc.reason, str(exc))
    poller.decode(blocks, int(time.time() * 1000))
    values = {k: v for fields in poller.last.values() for k, v in fields.items()}
    dropped = sum(poller.health.errors.values())
    if dropped:
        reasons = ", ".join(f"{r} x{n}" for r, n in poller.health.errors.items())
        return Found(unit, Answer.IMPLAUSIBLE, f"{dropped} values out of range ({reasons})", values)
    return Found(unit, Answer.DECODES, f"{len(values)} values in range", values)


def _silent_or_failed(unit: int, reason: str, detail: str) -> Found:
    if reason == "timeout":
        return Found(unit, Answer.SILENT, "no answer")
    return Found(unit, Answer.FAILED, f"{reason}: {detail}")


def config_snippet(found: list[Found], profile: Profile | None, host: str, port: int) -> str:
    """`[[sites.devices]]` tables for the units that answered, to paste into a config."""
    out = []
    for f in found:
        if not f.someone or (profile is not None and f.answer is not Answer.DECODES):
            continue
        kind = profile.kind if profile else "PROFILE"  # to fill in: scan again with --profile
        out.append(
            f'[[sites.devices]]\nid = "{kind}-{f.unit}"\nprofile = "{kind}"\nhost = "{host}"\n'
            f"port = {port}\nunit = {f.unit}\n"
        )
    return "\n".join(out)
