"""Deliveries held in a state's outbox under a lease, as the process holding them sees them.

A notice stays in the outbox until it is delivered or recorded as failed (released); if its
sender dies first, another takes it once its lease runs out. A row still being sent (a backlog longer
than the lease) has its lease renewed at each of its sender's rounds (`renew`), so that no
other process takes it for a dead sender's; past its lease all the same (the state was out of
reach), it is still its sender's own, as is a row delivered whose release the state refused:
the first only has its lease taken again, the second is released again. Sent again, either
would tell its recipient twice. The notifier's outbox and the waste service's held deliveries use it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

Row = TypeVar("Row", bound=tuple[Any, ...])


class OwnHolds:
    """The held rows this process sends or has delivered; `release` deletes one from the
    state, `refused` is told when the state refuses that."""

    def __init__(
        self,
        release: Callable[[int], None],
        refused: Callable[[Exception], object],
        renew: Callable[[list[int], float], None],
    ) -> None:
        self._release = release
        self._refused = refused
        self._renew = renew
        self._sending: set[int] = set()
        self._unreleased: set[int] = set()

    def sending(self, held: int) -> Callable[[], None]:
        """`held` is being sent here; what to call once it is delivered or recorded as failed."""
        self._sending.add(held)
        return functools.partial(self.release, held)

    def release(self, held: int) -> None:
        """Delivered or recorded as failed: nobody sends it again. Kept here while the state
        refuses, and released again by `release_again`."""
        self._sending.discard(held)
        try:
            self._release(held)
        except Exception as exc:
            self._unreleased.add(held)
            self._refused(exc)

    def release_again(self) -> None:
        """Release what the state refused to before; raises while it still refuses."""
        for held in sorted(self._unreleased):
            self._release(held)
            self._unreleased.discard(held)

    def renew(self, lease_until: float) -> None:
        """Lease what is still being sent here until `lease_until`; raises while the state refuses."""
        self._renew(sorted(self._sending), lease_until)

    def others(self, rows: list[Row]) -> list[Row]:
        """Of rows whose lease ran out (their id first), those this process is not sending and
        did not deliver: a dead sender's, to send."""
        mine = self._sending | self._unreleased
        return [row for row in rows if row[0] not in mine]
