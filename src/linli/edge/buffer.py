"""The durable buffer: every line the agent took is on disk until the store confirmed it.

SQLite in WAL mode, one row per chunk of lines (one group commit of the connectors),
so that 30,000 lines/s cost about 50 small transactions a second. The writer reads the
oldest chunks, and deletes them only after the store acknowledged the write: a crash
at any moment leaves every unconfirmed line queued. The file is bounded: past
`max_bytes` the oldest chunks are dropped and counted, never silently.

A DurableBuffer is used from one thread at a time (the agent gives it a thread of its own).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

log = logging.getLogger(__name__)

# AUTOINCREMENT: a chunk id is never given again, even once every chunk is gone. The writer holds
# the ids of a batch while the store takes it; a full buffer may drop that batch meanwhile, and
# a chunk queued then with a reused id would be removed as written without ever being sent.
_PENDING = """
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queued_ms INTEGER NOT NULL,
    lines INTEGER NOT NULL,
    body BLOB NOT NULL
)"""
_SCHEMA = f"""{_PENDING};
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS delivered_window (id INTEGER PRIMARY KEY, pairs BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY,
    queued_ms INTEGER NOT NULL,
    failed_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    line TEXT NOT NULL
);
"""


# Commits whose QoS 1 messages are remembered: 64 x 20 ms, far more than the moment between a
# commit and its acknowledgements, in which a crash leaves the broker owing them.
DELIVERED_WINDOW = 64


class SyncMode(StrEnum):
    """How hard a commit waits for the disk.

    `full`: each commit is fsynced, so a power cut loses nothing acknowledged.
    `normal`: WAL commits reach the OS at once (a crash of the agent loses nothing) and
    the disk at checkpoints (a power cut may lose the last moments).
    """

    FULL = "full"
    NORMAL = "normal"


@dataclass(frozen=True)
class Chunk:
    """Lines queued together, as the UTF-8 bytes the store is sent; `id` orders chunks by arrival."""

    id: int
    queued_ms: int
    lines: int
    body: bytes

    def split(self) -> list[bytes]:
        """The chunk's lines."""
        return self.body.split(b"\n")


@dataclass
class BufferStats:
    """What the buffer holds now, and what it dropped or dead-lettered since start."""

    chunks: int = 0
    lines: int = 0
    bytes: int = 0
    oldest_ms: int = 0
    dropped: int = 0
    dead_lettered: int = 0


class BufferInUseError(RuntimeError):
    """Another process holds the buffer: two agents must not share one."""


class DurableBuffer:
    """A FIFO of line-protocol lines in one SQLite file, bounded by size."""

    def __init__(
        self, path: Path, *, max_bytes: int, sync: SyncMode = SyncMode.FULL, chunk_lines: int = 5000
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        # A commit of more lines is kept as several chunks: see `append`.
        self.chunk_lines = chunk_lines
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are begun and committed explicitly below.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0.5)
        # One agent per buffer: the lock taken by the first write is held until close, so a
        # second agent started on the same file stops at once instead of interleaving.
        self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={sync.value.upper()}")
            self._db.executescript(_SCHEMA)
            with self._transaction():
                self._ids_never_reused()
        except sqlite3.OperationalError as exc:
            self._db.close()
            if "locked" in str(exc):
                raise BufferInUseError(
                    f"buffer {path} is in use by another linli agent; give each agent its own "
                    "([buffer] path, or a different [agent] name)"
                ) from exc
            raise
        chunks, lines, size = self._db.execute(
            "SELECT count(*), coalesce(sum(lines), 0), coalesce(sum(length(body)), 0) FROM pending"
        ).fetchone()
        self.stats = BufferStats(chunks=chunks, lines=lines, bytes=size, oldest_ms=self._oldest_ms())
        if lines:
            log.info("buffer %s: resuming with %d lines not yet written", path, lines)

    def append(self, lines: Sequence[str], now_ms: int | None = None, delivered: bytes = b"") -> None:
        """Queue lines as chunks of `chunk_lines` at most, in one transaction; on return they
        are committed to disk.

        The writer sends a batch of whole chunks, and only the head of a chunk larger than its
        batch, keeping the rest by rewriting it: under overload a commit of 200,000 lines was
        rewritten forty times, a 10 MB row each time, on the thread that also commits.

        `delivered` (the packet ids and line CRCs of the QoS 1 messages the lines came from)
        is committed with them, and the last DELIVERED_WINDOW commits' worth is kept: after a
        crash, the broker's second copy of a message is recognised.
        """
        if not lines:
            return
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        step = self.chunk_lines
        bodies = [
            ("\n".join(lines[i : i + step]).encode(), len(lines[i : i + step]))
            for i in range(0, len(lines), step)
        ]
        size = sum(len(body) for body, _ in bodies)
        s = self.stats
        excess = s.bytes + size - self.max_bytes
        drop: list[tuple[int, int, int]] = []
        with self._transaction():
            if excess > 0:
                # Keep the newest data: the screen shows now, and the oldest is the least useful.
                for row in self._db.execute("SELECT id, lines, length(body) FROM pending ORDER BY id"):
                    if excess <= 0:
                        break
                    drop.append(row)
                    excess -= row[2]
                self._db.executemany("DELETE FROM pending WHERE id = ?", [(row[0],) for row in drop])
            self._db.executemany(
                "INSERT INTO pending (queued_ms, lines, body) VALUES (?, ?, ?)",
                [(now_ms, n, body) for body, n in bodies],
            )
            if delivered:
                row = self._db.execute(
                    "INSERT INTO delivered_window (pairs) VALUES (?)", (delivered,)
                ).lastrowid
                self._db.execute(
                    "DELETE FROM delivered_window WHERE id <= ?", ((row or 0) - DELIVERED_WINDOW,)
                )
        s.chunks += len(bodies) - len(drop)
        s.lines += len(lines) - sum(row[1] for row in drop)
        s.bytes += size - sum(row[2] for row in drop)
        if drop:
            if s.dropped == 0:
                log.error(
                    "buffer %s is full (%d bytes): dropping the oldest lines, which the store has not taken",
                    self.path,
                    self.max_bytes,
                )
            s.dropped += sum(row[1] for row in drop)
            s.oldest_ms = self._oldest_ms()
        elif not s.oldest_ms:
            s.oldest_ms = now_ms

    def oldest(self, max_lines: int, *, after: int = 0, up_to: int | None = None) -> list[Chunk]:
        """The oldest chunks with id in (after, up_to], at most `max_lines` lines together (but one chunk)."""
        rows = self._db.execute(
            "SELECT id, queued_ms, lines, body FROM pending WHERE id > ? AND id <= ? ORDER BY id LIMIT 1000",
            (after, up_to if up_to is not None else 2**62),
        )
        chunks: list[Chunk] = []
        total = 0
        for chunk_id, queued_ms, n, body in rows:
            if chunks and total + n > max_lines:
                break
            # A row written as text (by hand, or another tool) reads back as str: the store
            # is sent the same bytes, and refuses them line by line if they are not lines.
            raw = body if isinstance(body, bytes) else str(body).encode()
            chunks.append(Chunk(chunk_id, queued_ms, n, raw))
            total += n
        return chunks

    def last_id(self) -> int:
        """The id of the newest chunk, 0 when empty."""
        row = self._db.execute("SELECT max(id) FROM pending").fetchone()
        return int(row[0] or 0)

    def remove(self, chunk_ids: Sequence[int]) -> None:
        """Forget chunks the store confirmed."""
        removed = []
        with self._transaction():
            for chunk_id in chunk_ids:
                row = self._db.execute(
                    "DELETE FROM pending WHERE id = ? RETURNING lines, length(body)", (chunk_id,)
                ).fetchone()
                if row is not None:
                    removed.append(row)
        s = self.stats
        s.chunks -= len(removed)
        s.lines -= sum(row[0] for row in removed)
        s.bytes -= sum(row[1] for row in removed)
        s.oldest_ms = self._oldest_ms()

    def replace(self, chunk: Chunk, lines: Sequence[bytes]) -> Chunk:
        """Keep only `lines` of a chunk, the rest having been written or dead-lettered."""
        if not lines:
            self.remove([chunk.id])
            return Chunk(chunk.id, chunk.queued_ms, 0, b"")
        body = b"\n".join(lines)
        with self._transaction():
            self._db.execute(
                "UPDATE pending SET lines = ?, body = ? WHERE id = ?", (len(lines), body, chunk.id)
            )
        self.stats.lines += len(lines) - chunk.lines
        self.stats.bytes += len(body) - len(chunk.body)
        return Chunk(chunk.id, chunk.queued_ms, len(lines), body)

    def dead_letter(
        self, chunk: Chunk, lines: Sequence[bytes], reason: str, now_ms: int | None = None
    ) -> None:
        """Keep lines the store refused for good in the dead-letter table, with the reason."""
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        with self._transaction():
            self._db.executemany(
                "INSERT INTO dead_letter (queued_ms, failed_ms, reason, line) VALUES (?, ?, ?, ?)",
                [(chunk.queued_ms, now_ms, reason, line.decode("utf-8", "replace")) for line in lines],
            )
        self.stats.dead_lettered += len(lines)

    def dead_letters(self, limit: int = 100) -> list[tuple[str, str]]:
        """The newest dead-lettered lines with their reasons, for an operator."""
        rows = self._db.execute("SELECT reason, line FROM dead_letter ORDER BY id DESC LIMIT ?", (limit,))
        return [(reason, line) for reason, line in rows]

    def delivered(self) -> list[bytes]:
        """The last commits' QoS 1 messages (packet ids and line CRCs), oldest first."""
        return [bytes(b) for (b,) in self._db.execute("SELECT pairs FROM delivered_window ORDER BY id")]

    def meta(self, prefix: str) -> dict[str, str]:
        """What the agent remembered across restarts under keys starting with `prefix`."""
        rows = self._db.execute(
            "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
        )
        return dict(rows.fetchall())

    def remember(self, key: str, value: str) -> None:
        """Keep a small fact across restarts (the MQTT subscriptions, rejected retained payloads)."""
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def _ids_never_reused(self) -> None:
        """Rebuild a buffer made before chunk ids were AUTOINCREMENT; its chunks keep their ids."""
        (sql,) = self._db.execute("SELECT sql FROM sqlite_master WHERE name = 'pending'").fetchone()
        if "AUTOINCREMENT" in sql:
            return
        self._db.execute("ALTER TABLE pending RENAME TO pending_before")
        self._db.execute(_PENDING)
        self._db.execute("INSERT INTO pending SELECT id, queued_ms, lines, body FROM pending_before")
        self._db.execute("DROP TABLE pending_before")

    def _oldest_ms(self) -> int:
        row = self._db.execute("SELECT queued_ms FROM pending ORDER BY id LIMIT 1").fetchone()
        return int(row[0]) if row else 0

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()
