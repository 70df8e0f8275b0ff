"""The buffered socket under paho: small reads served from memory, nothing lost or reordered."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from linli.edge.mqttsocket import READ_SIZE, BufferedSocket


@pytest.fixture
def pair() -> Iterator[tuple[BufferedSocket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)  # as paho sets it once connected
    yield BufferedSocket(ours), theirs
    ours.close()
    theirs.close()


def test_small_reads_come_from_one_system_read_in_order(pair: tuple[BufferedSocket, socket.socket]) -> None:
    sock, peer = pair
    # Two PUBLISH packets as paho reads them: command byte, length byte, then the body.
    packets = [b"\x30\x05\x00\x01ahi", b"\x30\x04\x00\x01bz"]
    peer.sendall(b"".join(packets))
    got = []
    for _ in packets:
        head = sock.recv(1) + sock.recv(1)
        got.append(head + sock.recv(head[1]))
    assert got == packets
    assert sock.pending() == 0


def test_pending_counts_what_paho_has_not_taken(pair: tuple[BufferedSocket, socket.socket]) -> None:
    sock, peer = pair
    peer.sendall(b"abcdef")
    assert sock.recv(2) == b"ab"
    # paho skips select() while pending() > 0, so buffered bytes never wait for new ones.
    assert sock.pending() == 4
    assert sock.recv(100) == b"cdef"
    assert sock.pending() == 0


def test_an_empty_buffer_and_socket_raise_blocking_io_error_like_a_socket(
    pair: tuple[BufferedSocket, socket.socket],
) -> None:
    sock, _ = pair
    with pytest.raises(BlockingIOError):
        sock.recv(1)


def test_end_of_stream_is_an_empty_read(pair: tuple[BufferedSocket, socket.socket]) -> None:
    sock, peer = pair
    peer.sendall(b"x")
    peer.shutdown(socket.SHUT_WR)
    assert sock.recv(1) == b"x"
    assert sock.recv(1) == b""  # paho takes this as the connection lost


def test_large_bodies_pass_whole_and_the_rest_stays_buffered() -> None:
    ours, peer = socket.socketpair()
    ours.settimeout(10)  # blocking reads: the sender's bytes arrive while we read
    sock = BufferedSocket(ours)
    body = bytes(range(256)) * 1024  # 256 KiB, as large as one refill
    sender = threading.Thread(target=peer.sendall, args=(body + b"next",))
    sender.start()
    try:
        received = b""
        while len(received) < len(body):
            received += sock.recv(len(body) - len(received))
        assert received == body
        tail = b""
        while len(tail) < 4:
            tail += sock.recv(READ_SIZE)
        assert tail == b"next"
    finally:
        sender.join(10)
        ours.close()
        peer.close()


def test_everything_else_is_the_socket_s_own(pair: tuple[BufferedSocket, socket.socket]) -> None:
    sock, peer = pair
    assert sock.fileno() == sock._sock.fileno()
    sock.send(b"ping")
    assert peer.recv(4) == b"ping"
