"""Debouncing scored detections into confirmed events (see `mqttspec.Confirm`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from linli.catalog.lineprotocol import FieldValue
from linli.catalog.mqttspec import Confirm


class Confirmer:
    """The confirmation state of one detector; feed it every hit in time order."""

    def __init__(self, spec: Confirm) -> None:
        self.spec = spec
        self._recent: deque[float] = deque()
        self._active = False
        self._last_keep = 0.0

    def observe(self, t_s: float, fields: Mapping[str, FieldValue]) -> tuple[bool, int]:  # noqa: PLR0911
        """(confirmed, 1 when this hit starts a new confirmed episode else 0)."""
        spec = self.spec
        for key, allowed in spec.only_if.items():
            if fields.get(key) not in allowed:
                return False, 0
        score = fields.get(spec.score)
        if not isinstance(score, int | float):
            return False, 0
        if self._active and t_s - self._last_keep <= spec.exit_s:
            if score >= spec.keep:
                self._last_keep = t_s
                return True, 0
            return False, 0
        self._active = False
        if score >= spec.instant:
            return self._start(t_s)
        if score >= spec.confirm:
            while self._recent and t_s - self._recent[0] > spec.window_s:
                self._recent.popleft()
            self._recent.append(t_s)
            if len(self._recent) >= spec.hits:
                return self._start(t_s)
        return False, 0

    def _start(self, t_s: float) -> tuple[bool, int]:
        self._active = True
        self._last_keep = t_s
        self._recent.clear()
        return True, 1
