"""API tokens with scopes, and the audit log of what they did.

A token is `linli_<id>_<secret>`: the id finds its row, the secret is kept only as a SHA-256
hash (the secret is 32 random bytes, so a slow hash buys nothing). Scopes nest: `read` (the
screen, dashboards), `ack` (duty officers: read and acknowledge), `admin` (everything,
subscriptions and the audit log included). A revoked token is refused at its next request.

Both live in the notifier's SQLite file, so `linli cloud token` works beside a running notifier.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_token (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, scope TEXT NOT NULL, hash BLOB NOT NULL,
    created_ms INTEGER NOT NULL, revoked_ms INTEGER
);
CREATE TABLE IF NOT EXISTS audit (
    at_ms INTEGER NOT NULL, who TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""
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


class TokenBook:
    """The tokens and the audit log in one SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)

    def create(self, name: str, scope: Scope) -> str:
        """A new token, returned once: only its hash is kept."""
        if not NAME.match(name):
            raise TokenError(f"token name {name!r}: letters, digits, space . _ @ -, at most 64")
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        token = f"linli_{token_id}_{secret}"
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO api_token VALUES (?, ?, ?, ?, ?, NULL)",
                    (token_id, name, str(scope), _hash(token), _now_ms()),
                )
            except sqlite3.IntegrityError as exc:
                raise TokenError(f"a token named {name!r} exists: revoke it or choose another name") from exc
        return token

    def revoke(self, name: str) -> bool:
        with self._lock:
            cur = self._db.execute(
                "UPDATE api_token SET revoked_ms = ? WHERE name = ? AND revoked_ms IS NULL", (_now_ms(), name)
            )
        return cur.rowcount == 1

    def tokens(self) -> list[dict[str, object]]:
        """Every token ever made, without its secret."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, scope, created_ms, revoked_ms FROM api_token ORDER BY created_ms"
            ).fetchall()
        keys = ("id", "name", "scope", "created_ms", "revoked_ms")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def holder(self, token: bytes) -> Holder | None:
        """Whose token this is, or None (unknown, revoked, malformed)."""
        try:
            text = token.decode("ascii")
        except UnicodeDecodeError:
            return None
        m = TOKEN.match(text)
        if m is None:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT name, scope, hash FROM api_token WHERE id = ? AND revoked_ms IS NULL", (m.group(1),)
            ).fetchone()
        if row is None or not secrets.compare_digest(row[2], _hash(text)):
            return None
        return Holder(row[0], Scope(row[1]))

    def audit(self, who: str, action: str, target: str, detail: str = "") -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO audit VALUES (?, ?, ?, ?, ?)", (_now_ms(), who, action, target, detail)
            )

    def audit_log(self, limit: int = 1000) -> list[dict[str, object]]:
        """The newest entries first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT at_ms, who, action, target, detail FROM audit ORDER BY rowid DESC LIMIT ?", (limit,)
            ).fetchall()
        keys = ("at_ms", "who", "action", "target", "detail")
        return [dict(zip(keys, row, strict=True)) for row in rows]


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _now_ms() -> int:
    return round(time.time() * 1000)
