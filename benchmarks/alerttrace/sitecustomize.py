"""Timestamps along an alert's path, for `alert_latency.py --trace` only.

Put on PYTHONPATH with LINLI_ALERT_TRACE naming a folder, it wraps a few functions of the edge
agent and the notifier, and appends `point reading_ms wall_time` lines to a file per process
there. The reading's own time (its `ts`, which becomes the alert's `time_ms`) ties the lines of
one alert together across processes; every process reads the same clock (`time.time`).
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from typing import Any

FOLDER = os.environ.get("LINLI_ALERT_TRACE")
_lock = threading.Lock()
_out: list[Any] = []  # the process's file, once opened


def mark(point: str, reading_ms: object) -> None:
    """One line: where the alert of the reading at `reading_ms` is now."""
    now = time.time()
    with _lock:
        if not _out:
            _out.append(open(os.path.join(FOLDER or ".", f"{os.getpid()}.trace"), "a", buffering=1))  # noqa: SIM115
        _out[0].write(f"{point} {reading_ms} {now:.6f}\n")


def wrap(owner: Any, name: str, before: Any = None, after: Any = None) -> None:
    """Mark `before(*args)` as `owner.name` is called and `after(result, *args)` as it returns."""
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def traced(*args: Any, **kwargs: Any) -> Any:
        if before is not None:
            before(*args)
        result = inner(*args, **kwargs)
        if after is not None:
            after(result, *args)
        return result

    setattr(owner, name, traced)


def _reading_ts(payload: bytes) -> object:
    try:
        return json.loads(payload).get("ts")
    except ValueError:
        return None


def _install() -> None:
    from linli.cloud.notifier import channels, engine, mqtt
    from linli.edge import alerting, urgency

    # The edge: its receive thread judged the reading urgent; the rules announced its alert.
    wrap(urgency.Urgency, "urgent", after=lambda r, _s, _rt, _t, p: r and mark("edge_urgent", _reading_ts(p)))
    wrap(alerting.AlertPublisher, "publish", before=lambda _s, e: mark("edge_published", e.time_ms))
    # The notifier: its MQTT thread took the event; its loop handled it (the state's transaction);
    # a tick claimed the notice and started its delivery; the HTTP send began.
    wrap(mqtt.AlertFeed, "_take", after=lambda a, *_: a is not None and mark("notifier_received", a.time_ms))
    wrap(engine.Notifier, "handle", before=lambda _s, a: mark("notifier_handle", a.time_ms))
    wrap(engine.Notifier, "handle", after=lambda _r, _s, a: mark("notifier_handled", a.time_ms))
    wrap(engine.Notifier, "_send", before=lambda _s, _i, _c, n, *_: mark("notifier_claimed", n.alert.time_ms))
    wrap(channels.Sender, "_post", before=lambda _s, _c, n: mark("notifier_post", n.alert.time_ms))


if FOLDER:
    _install()
