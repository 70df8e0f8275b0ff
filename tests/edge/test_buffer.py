"""The durable buffer: FIFO on disk, bounded, and nothing committed is lost to kill -9."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from linli.edge.buffer import BufferInUseError, DurableBuffer, SyncMode


def lines(first: int, n: int) -> list[str]:
    return [f"m,site=s,device=d v={i}i {1_790_000_000_000 + i}" for i in range(first, first + n)]


def test_chunks_come_back_oldest_first_and_leave_only_when_removed(tmp_path: Path) -> None:
    buf = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10_000_000)
    buf.append(lines(0, 3), now_ms=1000)
    buf.append(lines(3, 2), now_ms=2000)
    assert (buf.stats.chunks, buf.stats.lines, buf.stats.oldest_ms) == (2, 5, 1000)
    first = buf.oldest(3)
    assert [c.lines for c in first] == [3]  # a second chunk would pass 3 lines
    assert first[0].split() == [x.encode() for x in lines(0, 3)]
    assert [c.lines for c in buf.oldest(100)] == [3, 2]
    buf.remove([first[0].id])
    assert (buf.stats.chunks, buf.stats.lines, buf.stats.oldest_ms) == (1, 2, 2000)
    buf.close()


def test_a_commit_larger_than_a_chunk_is_kept_as_chunks_in_one_transaction(tmp_path: Path) -> None:
    """The writer then sends whole chunks and never rewrites the rest of a larger one: under
    overload that rewrite, a large row at a time, was most of the buffer thread's work."""
    buf = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10_000_000, chunk_lines=1000)
    buf.append(lines(0, 2500), now_ms=1000)
    assert (buf.stats.chunks, buf.stats.lines) == (3, 2500)
    chunks = buf.oldest(100_000)
    assert [c.lines for c in chunks] == [1000, 1000, 500]
    assert [line for c in chunks for line in c.split()] == [x.encode() for x in lines(0, 2500)]
    assert buf.stats.bytes == sum(len(c.body) for c in chunks)
    assert [c.lines for c in buf.oldest(1000)] == [1000]  # one writer batch: one chunk, whole
    buf.close()


def test_a_reopened_buffer_resumes_with_what_was_pending(tmp_path: Path) -> None:
    buf = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10_000_000)
    buf.append(lines(0, 4), now_ms=1000)
    size = buf.stats.bytes
    buf.close()
    again = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10_000_000)
    assert (again.stats.chunks, again.stats.lines, again.stats.bytes, again.stats.oldest_ms) == (
        1,
        4,
        size,
        1000,
    )
    assert again.oldest(10)[0].split()[-1] == lines(3, 1)[0].encode()
    again.close()


def test_a_full_buffer_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    sizes = [len("\n".join(lines(10 * k, 10)).encode()) for k in range(5)]
    room = sum(sizes[2:])  # the last three chunks fit exactly
    buf = DurableBuffer(tmp_path / "b.sqlite", max_bytes=room)
    for k in range(5):
        buf.append(lines(10 * k, 10), now_ms=1000 + k)
    assert buf.stats.dropped == 20
    assert buf.stats.bytes == room
    kept = buf.oldest(1000)
    assert [c.queued_ms for c in kept] == [1002, 1003, 1004]  # the newest three
    assert buf.stats.oldest_ms == 1002
    buf.close()


def test_dead_letters_keep_the_line_and_the_reason(tmp_path: Path) -> None:
    buf = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10_000_000)
    buf.append(lines(0, 3))
    chunk = buf.oldest(10)[0]
    parts = chunk.split()
    buf.dead_letter(chunk, [parts[1]], "HTTP 400 field type conflict")
    rest = buf.replace(chunk, [parts[0], parts[2]])
    assert rest.lines == 2
    assert buf.stats.lines == 2
    assert buf.dead_letters() == [("HTTP 400 field type conflict", lines(1, 1)[0])]
    assert buf.stats.dead_lettered == 1
    buf.close()


def test_a_second_agent_on_the_same_buffer_is_refused(tmp_path: Path) -> None:
    first = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**6)
    first.append(lines(0, 1))
    with pytest.raises(BufferInUseError, match="in use by another linli agent"):
        DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**6)
    first.close()
    again = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**6)
    assert again.stats.lines == 1
    again.close()


APPENDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from linli.edge.buffer import BufferInUseError, DurableBuffer, SyncMode
    buf = DurableBuffer(Path(sys.argv[1]), max_bytes=10**9, sync=SyncMode(sys.argv[2]))
    k = int(sys.argv[3])
    while True:
        buf.append([f"m,site=s,device=d v={k}i {k}"])
        # Acknowledged: this line is what a broker would be told.
        print(k, flush=True)
        k += 1
    """
)


@pytest.mark.servers
def test_kill_9_loses_nothing_that_was_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    rng = random.Random(4)
    acked: list[int] = []
    for _ in range(5):
        # SyncMode.NORMAL: a killed process loses nothing committed (only a power cut could).
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                APPENDER,
                str(path),
                SyncMode.NORMAL.value,
                str(len(acked) and acked[-1] + 1),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        # Kill at a random moment: after a random number of acknowledged appends.
        for _ in range(rng.randint(50, 400)):
            acked.append(int(proc.stdout.readline()))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # Whatever it printed before dying was acknowledged too.
        acked.extend(int(x) for x in proc.stdout.read().split())
        proc.stdout.close()
    buf = DurableBuffer(path, max_bytes=10**9)
    stored: list[int] = []
    after = 0
    while chunks := buf.oldest(10**6, after=after):
        stored += [int(c.body.split(b"v=")[1].split(b"i")[0]) for c in chunks]
        after = chunks[-1].id
    assert set(acked) <= set(stored)
    assert stored == sorted(stored)  # FIFO across crashes
    assert buf.stats.lines == len(stored)
    buf.close()


def test_a_row_edited_by_hand_reads_back_as_bytes(tmp_path: Path) -> None:
    """The writer's loop reads every pending row back; one written as text must not stop it."""
    path = tmp_path / "b.sqlite"
    buffer = DurableBuffer(path, max_bytes=10**8)
    buffer.append(["m f=1 1"])
    buffer.close()
    db = sqlite3.connect(path)
    with db:
        db.execute("INSERT INTO pending (queued_ms, lines, body) VALUES (2, 1, 'm f=2 2')")
    db.close()
    buffer = DurableBuffer(path, max_bytes=10**8)
    assert [c.body for c in buffer.oldest(10)] == [b"m f=1 1", b"m f=2 2"]
    buffer.close()
