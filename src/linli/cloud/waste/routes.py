"""Waste services on one state that split the routes between them (`routes = "split"`).

Each service renews a heartbeat in `waste_member`. The live members share the routes out by
rendezvous hashing with bounded loads (`share`): a route goes to the member whose hash with it
is highest among those below an even share, so a member that joins or leaves moves few routes.
A service follows a route while it holds the route's lease in `waste_route`; it lets a route
go as soon as the hash gives it to another member, and a dead service's leases run out with
its heartbeat.

The follower of a route logs the route's truck messages and dispatcher commands in
`waste_message`, with a marker where it opened each trip. The service taking the route over
replays the trips under way from those markers: it decides what the first follower decided,
and the claims in the state keep anything from being told twice. Every service keeps the last
minutes of the routes it does not follow, for the messages sent while a route was between two
followers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from linli.cloud.db import Tables

MEMBER = text(
    "INSERT INTO waste_member (id, until_s) VALUES (:me, :until) "
    "ON CONFLICT (id) DO UPDATE SET until_s = excluded.until_s"
)
# A lease is taken when it is free, ran out, or is the caller's own (renewed).
CLAIM = text(
    "INSERT INTO waste_route (route, owner, until_s) VALUES (:route, :me, :until) "
    "ON CONFLICT (route) DO UPDATE SET owner = excluded.owner, until_s = excluded.until_s "
    "WHERE waste_route.owner = excluded.owner OR waste_route.until_s < :now"
)
LOG = text(
    "INSERT INTO waste_message (route, ts_ms, truck, kind, payload) "
    "VALUES (:route, :ts_ms, :truck, :kind, :payload) ON CONFLICT DO NOTHING"
)
# Kinds in the log that are not a truck's messages.
# Where a trip was first followed: `truck` is the trip's key, the payload how many of its
# notices and incidents were in the state then (none, unless it was first followed mid-way).
OPENED = "opened"
COMMANDS = ("skip", "defer", "replace")  # the dispatcher's, `truck` the stop or the new truck


@dataclass(frozen=True)
class Logged:
    """One line of a route's log."""

    ts_ms: int
    truck: str
    kind: str
    payload: str

    @property
    def key(self) -> tuple[int, str, str]:
        return (self.ts_ms, self.truck, self.kind)


def _rank(route: str, member: str) -> bytes:
    return hashlib.blake2b(f"{route}\0{member}".encode(), digest_size=8).digest()


def share(routes: Iterable[str], members: Iterable[str]) -> dict[str, str]:
    """route -> the member that follows it, the same for every member that sees the same ones.

    Rendezvous hashing with bounded loads: each route goes to the member ranking highest for
    it that has fewer than its even share (rounded up), so that one joining or leaving moves
    few routes and none follows more than its share."""
    ranked = sorted(set(members))
    if not ranked:
        return {}
    routes = sorted(set(routes))
    cap = -(-len(routes) // len(ranked))
    load = dict.fromkeys(ranked, 0)
    out = {}
    # The routes whose favourite is clearest go first, so that the bound moves the fewest.
    for route in sorted(routes, key=lambda r: max(_rank(r, m) for m in ranked), reverse=True):
        for member in sorted(ranked, key=lambda m: _rank(route, m), reverse=True):
            if load[member] < cap:
                out[route] = member
                load[member] += 1
                break
    return out


class RouteLeases(Tables):
    """The members, the leases and the routes' log, on the waste service's state."""

    def round(self, me: str, routes: Iterable[str], now: float, until: float) -> tuple[set[str], set[str]]:
        """Renew this member, let go of the routes the hash gives to others, take or renew
        the rest where free. One transaction. Returns the routes this member holds now, and
        those nobody holds (their follower gone, the next not there yet)."""
        with self._engine.begin() as conn:
            conn.execute(MEMBER, {"me": me, "until": until})
            live = conn.execute(text("SELECT id FROM waste_member WHERE until_s >= :now"), {"now": now})
            members = [str(r[0]) for r in live]
            mine = {r for r, m in share(routes, members).items() if m == me}
            had = conn.execute(text("SELECT route FROM waste_route WHERE owner = :me"), {"me": me})
            gone = [{"route": r[0], "me": me} for r in had if r[0] not in mine]
            if gone:
                conn.execute(
                    text("UPDATE waste_route SET until_s = 0 WHERE route = :route AND owner = :me"), gone
                )
            if mine:
                conn.execute(
                    CLAIM, [{"route": r, "me": me, "until": until, "now": now} for r in sorted(mine)]
                )
            leases = conn.execute(text("SELECT route, owner, until_s FROM waste_route"))
            held, taken = set(), set()
            for route, owner, lease in leases:
                if lease >= now:
                    taken.add(str(route))
                    if owner == me:
                        held.add(str(route))
            return held, set(routes) - taken

    def leave(self, me: str) -> None:
        """Gone for good: the others take this member's routes at their next round."""
        with self._engine.begin() as conn:
            conn.execute(text("DELETE FROM waste_member WHERE id = :me"), {"me": me})
            conn.execute(text("UPDATE waste_route SET until_s = 0 WHERE owner = :me"), {"me": me})

    # --- the routes' log -----------------------------------------------------------

    def log(self, rows: list[dict[str, Any]]) -> None:
        """Lines for the log: route, ts_ms, truck, kind, payload; a line there already is kept once."""
        if rows:
            with self._engine.begin() as conn:
                conn.execute(LOG, rows)

    def logged(self, route: str, since_ms: int) -> list[Logged]:
        """A route's log from `since_ms`, in time order."""
        rows = self._rows(
            "SELECT ts_ms, truck, kind, payload FROM waste_message "
            "WHERE route = :route AND ts_ms >= :since ORDER BY ts_ms, id",
            {"route": route, "since": since_ms},
        )
        return [Logged(int(t), str(truck), str(k), str(p)) for t, truck, k, p in rows]

    def commands(self, after_id: int, limit: int = 500) -> list[tuple[int, str, Logged]]:
        """Dispatcher commands logged after `after_id`: (id, route, line)."""
        rows = self._rows(
            "SELECT id, route, ts_ms, truck, kind, payload FROM waste_message "
            "WHERE id > :after AND kind IN ('skip', 'defer', 'replace') ORDER BY id LIMIT :n",
            {"after": after_id, "n": limit},
        )
        return [(int(i), str(r), Logged(int(t), str(tr), str(k), str(p))) for i, r, t, tr, k, p in rows]

    def prune(self, before_ms: int) -> int:
        """Forget the log before `before_ms`: trips that old are over."""
        return self._change("DELETE FROM waste_message WHERE ts_ms < :t", {"t": before_ms})
