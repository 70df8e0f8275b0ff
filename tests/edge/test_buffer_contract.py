"""The durable buffer's whole contract, each part read back from the file after a reopen.

What the agent leans on besides FIFO order: the QoS 1 deliveries of the last commits (the
broker's second copy recognised after a crash), small facts kept across restarts, dead
letters newest first, reads bounded by id and by lines, the counters, and a commit the disk
refused leaving the buffer as it was and usable again.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from linli.edge.buffer import DELIVERED_WINDOW, BufferInUseError, DurableBuffer, SyncMode
from test_full_disk import (
    SmallDisk,
    small_disk,  # noqa: F401 (a fixture: a 1 MB tmpfs)
)


def line(i: int) -> str:
    return f"m,site=s,device=d v={i}i {1_790_000_000_000 + i}"


def reopened(buffer: DurableBuffer) -> DurableBuffer:
    buffer.close()
    return DurableBuffer(buffer.path, max_bytes=buffer.max_bytes)


def test_the_last_commits_deliveries_are_kept_in_order_and_no_more(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**7)
    buffer.append([line(0)])  # polled readings: no delivery to remember
    assert buffer.delivered() == []
    for i in range(DELIVERED_WINDOW + 6):
        buffer.append([line(i)], delivered=i.to_bytes(2, "big"))
        buffer.append([line(i)])
    buffer = reopened(buffer)
    assert buffer.delivered() == [i.to_bytes(2, "big") for i in range(6, DELIVERED_WINDOW + 6)]
    buffer.close()


def test_facts_kept_across_restarts_are_read_back_by_prefix(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**7)
    buffer.remember("sub:a/#", "1")
    buffer.remember("sub:b/#", "1")
    buffer.remember("sub:a/#", "2")  # the newest value stands
    buffer.remember("retained:x", "bad")
    buffer.remember("su", "short")
    buffer = reopened(buffer)
    assert buffer.meta("sub:") == {"sub:a/#": "2", "sub:b/#": "1"}
    assert buffer.meta("retained:") == {"retained:x": "bad"}
    assert buffer.meta("") == {"sub:a/#": "2", "sub:b/#": "1", "retained:x": "bad", "su": "short"}
    buffer.close()


def test_dead_letters_come_newest_first_up_to_the_limit(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**7)
    buffer.append([line(i) for i in range(3)], now_ms=1000)
    chunk = buffer.oldest(10)[0]
    for i, part in enumerate(chunk.split()):
        buffer.dead_letter(chunk, [part], f"reason {i}", now_ms=2000 + i)
    before = int(time.time() * 1000)
    buffer.dead_letter(chunk, [b"m v=\xff 1"], "not UTF-8")
    after = time.time() * 1000
    assert buffer.stats.dead_lettered == 4
    buffer = reopened(buffer)
    assert buffer.dead_letters(limit=2) == [("not UTF-8", "m v=\ufffd 1"), ("reason 2", line(2))]
    assert [reason for reason, _ in buffer.dead_letters()] == [
        "not UTF-8",
        "reason 2",
        "reason 1",
        "reason 0",
    ]
    assert buffer.stats.dead_lettered == 0  # counted since start, not kept
    buffer.close()  # the buffer's lock is exclusive: read its file once it is closed
    file = sqlite3.connect(buffer.path)
    times = file.execute("SELECT queued_ms, failed_ms FROM dead_letter ORDER BY id").fetchall()
    file.close()
    assert times[:3] == [(1000, 2000), (1000, 2001), (1000, 2002)]
    assert times[3][0] == 1000
    assert before <= times[3][1] <= after


def test_an_operator_is_shown_the_newest_100_dead_letters(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**7)
    buffer.append([line(i) for i in range(101)])
    chunk = buffer.oldest(1000)[0]
    buffer.dead_letter(chunk, chunk.split(), "refused")
    assert buffer.stats.dead_lettered == 101
    assert [text for _, text in buffer.dead_letters()] == [line(i) for i in range(100, 0, -1)]
    buffer.close()


def test_reads_are_bounded_by_id_and_by_lines_but_always_give_one_chunk(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**7)
    assert buffer.last_id() == 0
    assert buffer.oldest(10) == []
    for n in (3, 2, 4):
        buffer.append([line(i) for i in range(n)], now_ms=1000 + n)
    ids = [c.id for c in buffer.oldest(100)]
    assert buffer.last_id() == ids[-1]
    assert [c.lines for c in buffer.oldest(5)] == [3, 2]  # exactly 5 lines: both
    assert [c.lines for c in buffer.oldest(4)] == [3]
    assert [c.lines for c in buffer.oldest(8)] == [3, 2]  # 3 + 2 + 4 is more than 8
    assert [c.lines for c in buffer.oldest(1)] == [3]  # larger than asked, but one chunk
    assert [c.id for c in buffer.oldest(100, after=ids[0])] == ids[1:]
    assert [c.id for c in buffer.oldest(100, up_to=ids[1])] == ids[:2]
    assert [c.id for c in buffer.oldest(100, after=ids[0], up_to=ids[1])] == [ids[1]]
    assert buffer.oldest(100, after=ids[2]) == []
    before = int(time.time() * 1000)
    buffer.append([line(9)])
    buffer.append([])  # nothing to queue: no chunk
    after = time.time() * 1000
    newest = buffer.oldest(100, after=ids[2])
    assert len(newest) == 1
    assert before <= newest[0].queued_ms <= after
    buffer.close()


def test_the_counters_follow_every_change_and_survive_a_reopen(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**7)
    buffer.append([line(0), line(1)], now_ms=1000)
    buffer.append([line(2), line(3), line(4)], now_ms=2000)
    buffer.append([line(5)], now_ms=3000)
    first, second, third = buffer.oldest(100)
    size = len(first.body) + len(second.body) + len(third.body)
    assert (buffer.stats.chunks, buffer.stats.lines, buffer.stats.bytes, buffer.stats.oldest_ms) == (
        3, 6, size, 1000
    )  # fmt: skip
    buffer.remove([first.id, third.id + 1000])  # one that is not there changes nothing
    assert (buffer.stats.chunks, buffer.stats.lines, buffer.stats.bytes, buffer.stats.oldest_ms) == (
        2, 4, len(second.body) + len(third.body), 2000
    )  # fmt: skip
    kept = buffer.replace(second, second.split()[1:])
    assert (kept.id, kept.queued_ms, kept.lines, kept.body) == (
        second.id, 2000, 2, f"{line(3)}\n{line(4)}".encode()
    )  # fmt: skip
    assert (buffer.stats.chunks, buffer.stats.lines, buffer.stats.bytes) == (
        2,
        3,
        len(kept.body) + len(third.body),
    )
    buffer = reopened(buffer)
    assert (buffer.stats.chunks, buffer.stats.lines, buffer.stats.bytes, buffer.stats.oldest_ms) == (
        2, 3, len(kept.body) + len(third.body), 2000
    )  # fmt: skip
    empty = buffer.replace(kept, [])  # nothing left of it: gone
    assert (empty.id, empty.queued_ms, empty.lines, empty.body) == (kept.id, 2000, 0, b"")
    assert (buffer.stats.chunks, buffer.stats.lines, buffer.stats.bytes, buffer.stats.oldest_ms) == (
        1, 1, len(third.body), 3000
    )  # fmt: skip
    assert [c.id for c in buffer.oldest(100)] == [third.id]
    buffer.close()


def test_a_full_buffer_drops_whole_chunks_oldest_first_and_counts_their_lines(tmp_path: Path) -> None:
    # Lines of one length: 2, 1, 3 and 2 of them; the fourth chunk needs exactly the first's room.
    chunks = [[line(10 + 10 * k + i) for i in range(n)] for k, n in enumerate((2, 1, 3, 2))]
    sizes = [len("\n".join(c).encode()) for c in chunks]
    buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=sum(sizes[:3]))
    for k in range(3):
        buffer.append(chunks[k], now_ms=1000 + k)
    assert buffer.stats.dropped == 0  # exactly full: nothing dropped
    buffer.append(chunks[3], now_ms=1003)
    assert buffer.stats.dropped == 2  # the first chunk's lines, and no more
    assert [c.queued_ms for c in buffer.oldest(100)] == [1001, 1002, 1003]
    assert (buffer.stats.chunks, buffer.stats.lines, buffer.stats.bytes, buffer.stats.oldest_ms) == (
        3, 6, sum(sizes[1:]), 1001
    )  # fmt: skip
    buffer.append(chunks[0], now_ms=1004)  # again: the next oldest go, counted on top
    assert buffer.stats.dropped == 2 + 1 + 3
    assert [c.queued_ms for c in buffer.oldest(100)] == [1003, 1004]
    assert buffer.stats.oldest_ms == 1003
    buffer.close()


def test_one_byte_over_the_bound_drops_a_chunk(tmp_path: Path) -> None:
    # line(100) is one byte longer than line(10) or line(11).
    one = len(line(10).encode())
    buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=2 * one - 1)
    buffer.append([line(10)], now_ms=1000)
    buffer.append([line(11)], now_ms=1001)  # one byte too many: the first goes
    assert (buffer.stats.dropped, [c.queued_ms for c in buffer.oldest(100)]) == (1, [1001])
    buffer.close()
    full = DurableBuffer(tmp_path / "full.sqlite", max_bytes=2 * one)
    full.append([line(10)], now_ms=1000)
    full.append([line(11)], now_ms=1001)
    full.append([line(100)], now_ms=1002)  # dropping the first leaves it one byte over: both go
    assert (full.stats.dropped, [c.queued_ms for c in full.oldest(100)]) == (2, [1002])
    assert full.stats.bytes == one + 1
    full.close()


def test_each_sync_mode_is_what_the_file_is_opened_with(tmp_path: Path) -> None:
    for mode, level in ((SyncMode.FULL, 2), (SyncMode.NORMAL, 1)):
        buffer = DurableBuffer(tmp_path / f"{mode}.sqlite", max_bytes=10**7, sync=mode)
        assert buffer._db.execute("PRAGMA synchronous").fetchone()[0] == level
        assert buffer._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        buffer.close()
    default = DurableBuffer(tmp_path / "default.sqlite", max_bytes=10**7)
    assert default._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # full unless told
    default.close()


def test_a_buffer_that_cannot_be_opened_says_why(tmp_path: Path) -> None:
    nested = DurableBuffer(tmp_path / "state" / "agent" / "b.sqlite", max_bytes=10**7)  # folders made
    nested.close()
    (tmp_path / "folder.sqlite").mkdir()
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        DurableBuffer(tmp_path / "folder.sqlite", max_bytes=10**7)
    first = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**7)
    with pytest.raises(
        BufferInUseError,
        match=r"buffer .*b\.sqlite is in use by another linli agent; give each agent its own "
        r"\(\[buffer\] path, or a different \[agent\] name\)$",
    ):
        DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**7)
    first.close()


@pytest.mark.servers
def test_a_commit_the_disk_refused_leaves_the_buffer_as_it_was_and_usable(
    small_disk: SmallDisk,  # noqa: F811 (the fixture imported above)
) -> None:
    buffer = DurableBuffer(small_disk.folder / "b.sqlite", max_bytes=10**6)
    buffer.append([line(0)], now_ms=1000)
    before = (buffer.stats.chunks, buffer.stats.lines, buffer.stats.bytes, buffer.stats.oldest_ms)
    small_disk.fill()
    with pytest.raises(sqlite3.OperationalError, match="full"):
        buffer.append([line(i) for i in range(1, 2000)], now_ms=2000, delivered=b"\x01")
    assert (buffer.stats.chunks, buffer.stats.lines, buffer.stats.bytes, buffer.stats.oldest_ms) == before
    small_disk.free()
    # The next transaction starts, and nothing of the refused one is there.
    buffer.append([line(2000)], now_ms=3000, delivered=b"\x02")
    buffer = reopened(buffer)
    assert [c.queued_ms for c in buffer.oldest(100)] == [1000, 3000]
    assert buffer.delivered() == [b"\x02"]
    buffer.close()


def test_a_chunk_and_its_deliveries_are_committed_together_or_not_at_all(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**7)
    with pytest.raises(sqlite3.Error):  # a delivery that cannot be stored, after its chunk was
        buffer.append([line(0)], now_ms=1000, delivered=object())  # type: ignore[arg-type]
    buffer.append([line(1)], now_ms=2000, delivered=b"\x01")  # rolled back: a new transaction
    buffer = reopened(buffer)
    assert [c.queued_ms for c in buffer.oldest(100)] == [2000]
    assert buffer.delivered() == [b"\x01"]
    buffer.close()


def test_a_chunk_id_is_never_given_again_so_a_removal_takes_only_what_was_written(
    tmp_path: Path,
) -> None:
    one = len(line(10).encode())
    buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=3 * one)
    buffer.append([line(10), line(11)], now_ms=1000)
    taken = buffer.oldest(100)  # the writer's batch, on its way to the store
    # Meanwhile a commit too large for what is left drops every chunk, the batch among them.
    buffer.append([line(12), line(13)], now_ms=2000)
    assert buffer.stats.dropped == 2
    buffer.remove([c.id for c in taken])  # the store took the batch
    assert [(c.queued_ms, c.lines) for c in buffer.oldest(100)] == [(2000, 2)]
    assert (buffer.stats.chunks, buffer.stats.lines) == (1, 2)
    # Nor after a restart with nothing pending.
    newest = buffer.last_id()
    buffer.remove([newest])
    buffer = reopened(buffer)
    buffer.append([line(14)], now_ms=3000)
    assert buffer.last_id() > newest
    buffer.close()


def test_a_buffer_from_before_ids_were_never_reused_keeps_its_chunks(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE pending (id INTEGER PRIMARY KEY, queued_ms INTEGER NOT NULL, "
        "lines INTEGER NOT NULL, body BLOB NOT NULL)"
    )
    old.executemany(
        "INSERT INTO pending VALUES (?, ?, 1, ?)", [(4, 1000, line(4).encode()), (9, 2000, line(9).encode())]
    )
    old.commit()
    old.close()
    buffer = DurableBuffer(path, max_bytes=10**7)
    assert [(c.id, c.queued_ms, c.body) for c in buffer.oldest(100)] == [
        (4, 1000, line(4).encode()),
        (9, 2000, line(9).encode()),
    ]
    assert (buffer.stats.chunks, buffer.stats.lines) == (2, 2)
    buffer.remove([9])
    buffer.append([line(10)], now_ms=3000)
    assert buffer.last_id() == 10  # not 9 again
    buffer.close()
