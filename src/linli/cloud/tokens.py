"""API tokens with scopes, and the audit log of what they did.

A token is `linli_<id>_<secret>`: the id finds its row, the secret is kept only as a SHA-256
hash (the secret is 32 random bytes, so a slow hash buys nothing). Scopes nest: `book` (a
booking link of the waste service, bound to one office and its compounds), `read` (the
screen, dashboards), `ack` (duty officers: read and acknowledge), `admin` (everything,
subscriptions and the audit log included). A revoked token is refused at its next request.

Both live in a service's state (`linli.cloud.db`): the notifier's for `linli cloud token`, the
waste service's for `linli waste token`, each working beside its running service.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from linli.cloud.db import LAST_ID, Tables
from linli.cloud.scope import Scope

TOKEN = re.compile(r"^linli_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")
# The one token from the environment ($LINLI_CLOUD_TOKEN), as the audit log names it.
ENV_TOKEN = "env:LINLI_CLOUD_TOKEN"  # noqa: S105 (a name for the audit log, not a secret)


# The scope a request needs, from its method and path: the notifier's is `needed`.
Needed = Callable[[str, str], Scope]


def rules(acknowledged: str, booking: tuple[str, ...] = ()) -> Needed:
    """An API's scopes: `booking` paths (and those under them) `book`, other reading `read`,
    acknowledging (`POST {acknowledged}.../ack`) `ack`, the tokens, the audit log and the rest `admin`."""

    def needed(method: str, path: str) -> Scope:
        if path.startswith(("/audit", "/tokens")):
            return Scope.ADMIN
        if path in booking or path.startswith(tuple(f"{p}/" for p in booking)):
            return Scope.BOOK
        if method in ("GET", "HEAD"):
            return Scope.READ
        if method == "POST" and path.startswith(acknowledged) and path.endswith("/ack"):
            return Scope.ACK
        return Scope.ADMIN

    return needed


_alerts = rules("/alerts/")


def needed(method: str, path: str) -> Scope:
    """The notifier's: acknowledging, silencing (`POST /silences`, `.../expire`,
    `DELETE /silences/{id}`) and posting alerts in Alertmanager's format (`POST /alertmanager`)
    need `ack`."""
    if method == "POST" and (
        path in ("/silences", "/alertmanager") or (path.startswith("/silences/") and path.endswith("/expire"))
    ):
        return Scope.ACK
    if method == "DELETE" and path.startswith("/silences/") and path.count("/") == 2:
        return Scope.ACK
    return _alerts(method, path)


@dataclass(frozen=True)
class Holder:
    """Who a request's token belongs to; a `book` token also names its office and compounds."""

    name: str
    scope: Scope
    office: str | None = None
    compounds: frozenset[str] = frozenset()


class TokenError(ValueError):
    pass


class TokenBook(Tables):
    """The tokens and the audit log, in the notifier's state."""

    def create(
        self, name: str, scope: Scope, *, office: str | None = None, compounds: Iterable[str] = ()
    ) -> str:
        """A new token, returned once: only its hash is kept. A `book` token is bound to an office
        (default: its name) and the compounds it may book at; no other scope is bound."""
        if not NAME.match(name):
            raise TokenError(f"token name {name!r}: letters, digits, space . _ @ -, at most 64")
        places = sorted(set(compounds))
        if (scope is Scope.BOOK) != bool(places):
            raise TokenError("a book token needs the compounds it may book at; no other scope takes any")
        binding = json.dumps({"office": office or name, "compounds": places}) if places else None
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        token = f"linli_{token_id}_{secret}"
        row = {"id": token_id, "name": name, "scope": str(scope), "hash": _hash(token), "at": _now_ms(),
               "binding": binding}  # fmt: skip
        made = self._change(
            "INSERT INTO api_token (id, name, scope, hash, created_ms, binding) "
            "VALUES (:id, :name, :scope, :hash, :at, :binding) ON CONFLICT DO NOTHING",
            row,
        )
        if made != 1:
            raise TokenError(f"a token named {name!r} exists: revoke it or choose another name")
        return token

    def revoke(self, name: str) -> bool:
        done = self._change(
            "UPDATE api_token SET revoked_ms = :at WHERE name = :name AND revoked_ms IS NULL",
            {"at": _now_ms(), "name": name},
        )
        return done == 1

    def tokens(self) -> list[dict[str, object]]:
        """Every token ever made, without its secret."""
        return self._dicts(
            "SELECT id, name, scope, created_ms, revoked_ms, binding FROM api_token ORDER BY created_ms"
        )

    def live(self) -> bool:
        """Whether any token is not revoked (a service with none, and none from its environment,
        could not be called at all)."""
        return bool(self._rows("SELECT 1 FROM api_token WHERE revoked_ms IS NULL LIMIT 1"))

    def holder(self, token: bytes) -> Holder | None:
        """Whose token this is, or None (unknown, revoked, malformed)."""
        try:
            text_ = token.decode("ascii")
        except UnicodeDecodeError:
            return None
        m = TOKEN.match(text_)
        if m is None:
            return None
        rows = self._rows(
            "SELECT name, scope, hash, binding FROM api_token WHERE id = :id AND revoked_ms IS NULL",
            {"id": m.group(1)},
        )
        if not rows or not secrets.compare_digest(bytes(rows[0][2]), _hash(text_)):
            return None
        name, scope, _, binding = rows[0]
        if binding is None:
            return Holder(str(name), Scope(scope))
        bound = json.loads(binding)
        return Holder(str(name), Scope(scope), str(bound["office"]), frozenset(bound["compounds"]))

    def audit(self, who: str, action: str, target: str, detail: str = "") -> None:
        self._change(
            "INSERT INTO audit (at_ms, who, action, target, detail) "
            "VALUES (:at, :who, :action, :target, :detail)",
            {"at": _now_ms(), "who": who, "action": action, "target": target, "detail": detail},
        )

    def audit_log(self, limit: int = 1000, before: int | None = None) -> list[dict[str, object]]:
        """The newest entries first; those before the entry `before` (its `id`), for a next page."""
        return self._dicts(
            "SELECT id, at_ms, who, action, target, detail FROM audit WHERE id < :before "
            "ORDER BY id DESC LIMIT :n",
            {"n": limit, "before": LAST_ID if before is None else before},
        )


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _now_ms() -> int:
    return round(time.time() * 1000)
