"""What a device simulator is told about itself when the district starts it."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

from linli.catalog.profile import Profile


@dataclass(frozen=True)
class DeviceContext:
    """One device of the scenario: identity, seed, start time, options and faults."""

    site: str
    device: str
    index: int  # 1-based within its group at its site
    seed: str
    start: float
    faults: frozenset[str] = frozenset()
    options: Mapping[str, Any] = field(default_factory=dict)
    timetable: Any = None  # the GTFS feed trucks run (linli.transit.gtfs.Feed)
    traffic: Any = None  # how its roads run (linli.sim.timetable.Traffic)


Message = tuple[str, dict[str, Any]]


class MqttBehaviour(Protocol):
    """An MQTT device model: the messages it published up to simulated time t."""

    profile: Profile

    def advance_to(self, t: float) -> list[Message]: ...


def kind_module(kind: str) -> ModuleType:
    """The behaviour module of a kind; the error says where it should be."""
    try:
        module = importlib.import_module(f"linli.sim.kinds.{kind}")
    except ModuleNotFoundError as exc:
        if exc.name != f"linli.sim.kinds.{kind}":
            raise
        raise KeyError(
            f"no simulator for kind '{kind}': add linli/sim/kinds/{kind}.py with make(ctx)"
        ) from None
    if not callable(getattr(module, "make", None)):
        raise KeyError(f"linli/sim/kinds/{kind}.py has no make(ctx) function")
    return module


def kind_faults(kind: str) -> frozenset[str]:
    """Fault names a kind's simulator understands (besides the district-wide `offline`)."""
    faults: frozenset[str] = getattr(kind_module(kind), "FAULTS", frozenset())
    return faults
