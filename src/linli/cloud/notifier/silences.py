"""Silences: alerts matching a silence's matchers are not told from its start to its end.

They are kept in the notifier's state (made over the API or `linli cloud silence`), so one made
on any replica holds on every one. A silenced alert is still recorded (`GET /alerts`), and told
when the silence ends (or is expired, or deleted) if it still fires. An expired silence stays
listed as ended; a deleted one is gone. A silence that may hold a life-safety
alert (no `rule` matcher, or one matching a `life_safety` rule) needs the `admin` scope.
"""

from __future__ import annotations

import fnmatch
import secrets

from linli.cloud.notifier.config import GroupLabel, NotifierConfig, Silence, life_safety
from linli.cloud.notifier.store import Store

# The longest a silence may be made for: a forgotten one must not hide alerts for ever.
LONGEST_S = 30 * 86400.0


class SilenceError(ValueError):
    """A silence that cannot be made: the text says why."""


def may_hold_life_safety(config: NotifierConfig, matchers: dict[GroupLabel, str]) -> bool:
    """Whether a silence with these matchers could hold a life-safety alert."""
    pattern = matchers.get("rule")
    if pattern is None:
        return True
    # A rule that is one, or a pattern that matches one (`charger.*`).
    samples = [s for r in config.life_safety for s in (r, f"{r}x", f"{r}.x")]
    return life_safety(config, pattern) or any(fnmatch.fnmatchcase(sample, pattern) for sample in samples)


def make(
    config: NotifierConfig,
    matchers: dict[GroupLabel, str],
    *,
    starts_s: float,
    duration_s: float,
    author: str,
    comment: str,
    admin: bool,
) -> Silence:
    """A new silence, checked: SilenceError if it is too long, or may hold a life-safety alert
    and its author is not an admin."""
    if not 0 < duration_s <= LONGEST_S:
        raise SilenceError(f"a silence lasts more than 0 s and at most {LONGEST_S:g} s (30 days)")
    if not admin and may_hold_life_safety(config, matchers):
        raise SilenceError(
            "this silence could hold a life-safety alert (smoke, a fire alarm, the fire pump, SOS): "
            "name a rule that is not one, or ask someone with the admin scope"
        )
    return Silence(
        id=secrets.token_hex(8),
        matchers=matchers,
        starts_s=starts_s,
        ends_s=starts_s + duration_s,
        author=author,
        comment=comment,
    )


def expire(store: Store, silence_id: str, now: float) -> Silence | None:
    """End a silence now; the silence as it is now, or None if there is none still running."""
    for silence in store.silences(now):
        if silence.id == silence_id:
            ended = silence.model_copy(update={"ends_s": max(silence.starts_s, now)})
            store.put_silence(ended)
            return ended
    return None


def delete(config: NotifierConfig, store: Store, silence_id: str, *, admin: bool) -> Silence | None:
    """Forget a silence, running or ended; the silence as it was, or None if there is none.
    SilenceError if it may hold a life-safety alert and its deleter is not an admin (as to make it)."""
    for silence in store.silences():
        if silence.id == silence_id:
            if not admin and may_hold_life_safety(config, silence.matchers):
                raise SilenceError(
                    "this silence could hold a life-safety alert: only someone with the admin scope "
                    "may delete it (expire it to end it)"
                )
            return store.delete_silence(silence_id)
    return None
