"""API tokens with scopes, and the audit log of what they did.

A token is `linli_<id>_<secret>`: the id finds its row, the secret is kept only as a SHA-256
hash (the secret is 32 random bytes, so a slow hash buys nothing). Scopes nest: `read` (the
screen, dashboards), `ack` (duty officers: read and acknowledge), `admin` (everything,
subscriptions and the audit log included). A revoked token is refused at its next request.

Both live in the notifier's state (`linli.cloud.db`), so `linli cloud token` works beside a
running notifier.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

from linli.cloud.db import Tables

TOKEN = re.compile(r"^linli_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")
# The one token from the environment ($LINLI_CLOUD_TOKEN), as the audit log names it.
ENV_TOKEN = "env:LINLI_CLOUD_TOKEN"  # noqa: S105 (a name for the audit log, not a secret)


class Scope(StrEnum):
    READ = "read"
    ACK = "ack"
    ADMIN = "admin"

    def allows(self, needed: Scope) -> bool:
        order = list(Scope)
        return order.index(self) >= order.index(needed)


def needed(method: str, path: str) -> Scope:
    """The scope a request needs: reading is `read`, acknowledging `ack`, the rest `admin`."""
    if path.startswith(("/audit", "/tokens")):
        return Scope.ADMIN
    if method in ("GET", "HEAD"):
        return Scope.READ
    if method == "POST" and path.startswith("/alerts/") and path.endswith("/ack"):
        return Scope.ACK
    return Scope.ADMIN


@dataclass(frozen=True)
class Holder:
    """Who a request's token belongs to."""

    name: str
    scope: Scope


class TokenError(ValueError):
    pass


class TokenBook(Tables):
    """The tokens and the audit log, in the notifier's state."""

    def create(self, name: str, scope: Scope) -> str:
        """A new token, returned once: only its hash is kept."""
        if not NAME.match(name):
            raise TokenError(f"token name {name!r}: letters, digits, space . _ @ -, at most 64")
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        token = f"linli_{token_id}_{secret}"
        row = {"id": token_id, "name": name, "scope": str(scope), "hash": _hash(token), "at": _now_ms()}
        made = self._change(
            "INSERT INTO api_token (id, name, scope, hash, created_ms) "
            "VALUES (:id, :name, :scope, :hash, :at) ON CONFLICT DO NOTHING",
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
            "SELECT id, name, scope, created_ms, revoked_ms FROM api_token ORDER BY created_ms"
        )

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
            "SELECT name, scope, hash FROM api_token WHERE id = :id AND revoked_ms IS NULL",
            {"id": m.group(1)},
        )
        if not rows or not secrets.compare_digest(bytes(rows[0][2]), _hash(text_)):
            return None
        return Holder(str(rows[0][0]), Scope(rows[0][1]))

    def audit(self, who: str, action: str, target: str, detail: str = "") -> None:
        self._change(
            "INSERT INTO audit (at_ms, who, action, target, detail) "
            "VALUES (:at, :who, :action, :target, :detail)",
            {"at": _now_ms(), "who": who, "action": action, "target": target, "detail": detail},
        )

    def audit_log(self, limit: int = 1000) -> list[dict[str, object]]:
        """The newest entries first."""
        return self._dicts(
            "SELECT at_ms, who, action, target, detail FROM audit ORDER BY id DESC LIMIT :n", {"n": limit}
        )


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _now_ms() -> int:
    return round(time.time() * 1000)
