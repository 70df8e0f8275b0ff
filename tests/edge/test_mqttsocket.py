"""The buffered socket under paho: small reads served from memory, nothing lost or reordered."""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator, Sized
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from linli.cloud.broker.certs import make_ca, make_leaf
from linli.demo.servers import LocalServer
from linli.edge import mqttsocket
from linli.edge.mqttsocket import READ_SIZE, BufferedClient, BufferedSocket, Publish
from support import unique

TCP_CLOSE_WAIT = 8  # tcpi_state in Linux's struct tcp_info


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


def publish_packet(
    topic: bytes,
    payload: bytes,
    qos: int = 0,
    mid: int = 0,
    retain: bool = False,
    *,
    dup: bool = False,
    properties: bytes = b"",  # MQTT 5's, packed
) -> bytes:
    """One PUBLISH packet (MQTT 3.1.1, or 5 with `properties`), encoded by hand as the broker sends it."""
    body = len(topic).to_bytes(2) + topic + (mid.to_bytes(2) if qos else b"") + properties + payload
    length, remaining = b"", len(body)
    while True:
        byte, remaining = remaining & 0x7F, remaining >> 7
        length += bytes([byte | (0x80 if remaining else 0)])
        if not remaining:
            break
    return bytes([0x30 | dup << 3 | qos << 1 | int(retain)]) + length + body


def publish_through(
    mosquitto: LocalServer,
    sub: paho.Client,
    *,
    topic: str,
    sent: list[tuple[int, bytes]],
    done: threading.Event,
    got: Sized,
) -> None:
    """Subscribe `sub` to `topic`, publish `sent` (QoS, payload) on it and wait until `done`."""
    subscribed = threading.Event()
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("pub"))
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        assert subscribed.wait(10)
        for info in [pub.publish(topic, payload, qos=qos) for qos, payload in sent]:
            info.wait_for_publish(30)
        assert done.wait(30), f"{len(got)} of {len(sent)} arrived"
    finally:
        pub.loop_stop()
        pub.disconnect()
        sub.loop_stop()
        sub.disconnect()


def test_whole_publishes_are_decoded_in_order_with_their_flags(
    pair: tuple[BufferedSocket, socket.socket],
) -> None:
    sock, peer = pair
    big = bytes(range(256)) * 100  # 25,600 bytes: a three-byte remaining length
    peer.sendall(
        publish_packet(b"a/b", b"{}")
        + publish_packet(b"cameras/s1/c1/event", b"x" * 200, qos=1, mid=65535)  # two-byte length
        + publish_packet(b"t", big, qos=1, mid=7, retain=True)
        + publish_packet(b"t", b"", qos=0)
    )
    sock.recv(0)  # fills the buffer, as paho's first read does
    assert sock.take_publishes(100) == [
        (b"a/b", b"{}", 0, False, 0),
        (b"cameras/s1/c1/event", b"x" * 200, 1, False, 65535),
        (b"t", big, 1, True, 7),
        (b"t", b"", 0, False, 0),
    ]
    assert sock.pending() == 0


def test_a_publish_cut_off_by_the_read_is_left_for_paho(pair: tuple[BufferedSocket, socket.socket]) -> None:
    sock, peer = pair
    whole, cut = publish_packet(b"a", b"1"), publish_packet(b"b", b"2" * 50)
    peer.sendall(whole + cut[:20])
    sock.recv(0)
    assert sock.take_publishes(100) == [(b"a", b"1", 0, False, 0)]
    assert sock.pending() == 20  # untouched: paho reads the rest the usual way
    assert sock.recv(20) == cut[:20]


@pytest.mark.parametrize(
    ("packet", "why"),
    [
        (b"\x90\x03\x00\x01\x00", "a SUBACK"),
        (publish_packet(b"a", b"1", qos=2, mid=1), "QoS 2, which needs paho's state"),
        (b"\x30\x03\x00\x00x", "an empty topic, a protocol error paho reports"),
        (b"\x32\x03\x00\x01a", "a QoS 1 packet too short for its packet id"),
        (b"\x30\xff\xff\xff\xff\x01", "a remaining length longer than four bytes"),
    ],
)
def test_anything_but_a_plain_publish_stops_the_batch_where_it_is(
    pair: tuple[BufferedSocket, socket.socket], packet: bytes, why: str
) -> None:
    sock, peer = pair
    before = publish_packet(b"a", b"1")
    peer.sendall(before + packet + publish_packet(b"b", b"2"))
    sock.recv(0)
    assert sock.take_publishes(100) == [(b"a", b"1", 0, False, 0)], why
    assert sock.pending() == len(packet) + len(publish_packet(b"b", b"2")), why


def test_a_batch_holds_at_most_the_limit(pair: tuple[BufferedSocket, socket.socket]) -> None:
    sock, peer = pair
    peer.sendall(b"".join(publish_packet(b"t", str(i).encode()) for i in range(10)))
    sock.recv(0)
    assert [p[1] for p in sock.take_publishes(4)] == [b"0", b"1", b"2", b"3"]
    assert [p[1] for p in sock.take_publishes(100)] == [str(i).encode() for i in range(4, 10)]


def test_a_read_s_first_publish_comes_in_its_batch_not_through_paho_one_by_one() -> None:
    """At light load each read holds a few messages: the first went through paho's own path and a
    callback of its own, which cost more than the rest of the read."""
    client = BufferedClient(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311, manual_ack=True)
    by_paho: list[bytes] = []
    batches: list[list[Publish]] = []
    client.on_message = lambda _c, _u, m: by_paho.append(bytes(m.payload))
    client.on_publishes = batches.append
    ours, peer = socket.socketpair()
    ours.setblocking(False)  # as paho sets it once connected
    client._sock = BufferedSocket(ours)
    try:
        for burst in range(3):
            peer.sendall(b"".join(publish_packet(b"t", f"{burst}:{i}".encode()) for i in range(5)))
            assert select.select([ours], [], [], 5)[0]  # what paho's loop waits for
            assert client.loop_read() == paho.MQTT_ERR_SUCCESS
    finally:
        client._sock = None
        ours.close()
        peer.close()
    assert by_paho == []
    expected = [[f"{burst}:{i}".encode() for i in range(5)] for burst in range(3)]
    assert [[payload for _, payload, *_ in batch] for batch in batches] == expected


def test_a_flood_through_mosquitto_arrives_whole_in_order_mostly_in_batches(mosquitto: LocalServer) -> None:
    """Real broker: QoS 0 and 1, sizes across the remaining-length boundaries, acknowledged by hand."""
    topic = unique("flood")
    sizes = [0, 1, 100, 127, 128, 5_000, 16_383, 16_384, 70_000]
    sent = [(i % 2, f"{i}:".encode() + b"p" * sizes[i % len(sizes)]) for i in range(3000)]
    batches: list[int] = []
    got: list[tuple[int, bytes]] = []
    done = threading.Event()

    def on_publishes(batch: list[Publish]) -> None:
        batches.append(len(batch))
        for raw_topic, payload, qos, _retain, mid in batch:
            assert raw_topic.decode() == topic
            got.append((qos, payload))
            if qos:
                sub.ack(mid, 1)
        if len(got) >= len(sent):
            done.set()

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        on_publishes([(msg._topic, bytes(msg.payload), msg.qos, msg.retain, msg.mid)])

    sub = BufferedClient(CallbackAPIVersion.VERSION2, client_id=unique("sub"), protocol=paho.MQTTv311)
    sub.manual_ack_set(True)
    sub.on_message = on_message
    sub.on_publishes = on_publishes
    publish_through(mosquitto, sub, topic=topic, sent=sent, done=done, got=got)
    # Each QoS keeps its order; the publisher's in-flight window lets QoS 0 overtake QoS 1.
    for qos in (0, 1):
        assert [p for q, p in got if q == qos] == [p for q, p in sent if q == qos]
    assert len(got) == len(sent)
    assert sum(batches) == len(sent)
    # Most messages skip paho's per-packet path: more came in batches than one at a time.
    assert sum(n for n in batches if n > 1) > len(sent) / 2, batches[:50]


class Clock:
    """The socket's time: read, and moved by its sleeps and by the test (time spent in select)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def test_after_a_small_read_the_next_comes_coalesce_s_after_it_and_after_a_full_one_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(mqttsocket, "time", clock)
    ours, theirs = socket.socketpair()
    try:
        sock = BufferedSocket(ours, coalesce_s=0.02)
        theirs.sendall(b"x" * 10)
        assert sock.recv(10) == b"x" * 10
        assert clock.slept == []  # the first read after the start does not wait
        # A stream: the next message 5 ms later is read 20 ms after the last read, not sooner.
        clock.now += 0.005
        theirs.sendall(b"y" * 10)
        assert sock.recv(10) == b"y" * 10
        assert clock.slept == [0.015]
        # An alarm 100 ms after the last read (10 a second) has waited long enough in select:
        # read at once, not held 20 ms more.
        clock.now += 0.1
        theirs.sendall(b"a")
        assert sock.recv(1) == b"a"
        assert clock.slept == [0.015]
        # Counted from the end of the read's handling (the client says when): a stream is read
        # as often as before, when each read waited 20 ms after the socket woke the thread.
        clock.now += 0.004
        sock.handled()
        clock.now += 0.001
        theirs.sendall(b"b")
        assert sock.recv(1) == b"b"
        assert clock.slept == [0.015, 0.019]
        theirs.sendall(b"z" * mqttsocket.COALESCE_BELOW)
        data = b""
        while len(data) < mqttsocket.COALESCE_BELOW:
            data += sock.recv(mqttsocket.COALESCE_BELOW)
        clock.slept.clear()
        theirs.sendall(b"w")
        assert sock.recv(1) == b"w"
        assert clock.slept == []  # after a large read: at once
    finally:
        ours.close()
        theirs.close()


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected loopback TCP pair (a socketpair cannot be reset): ours non-blocking, as paho's."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname())
        theirs, _ = listener.accept()
    ours.setblocking(False)
    return ours, theirs


@pytest.mark.parametrize("ending", ["closed", "reset"])
def test_the_end_or_an_error_an_early_read_met_is_told_at_once_not_after_another_wait(
    monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """The client refills before paho's read of a packet (`refill`); when that read meets the
    end of the stream or a reset, paho's next recv hears it at once, with the reset's own
    error. (Before, paho's recv waited `coalesce_s` more, up to 100 ms, and read again: after a
    reset, that read found only the end of the stream.)"""
    clock = Clock()
    monkeypatch.setattr(mqttsocket, "time", clock)
    ours, theirs = _tcp_pair()
    try:
        sock = BufferedSocket(ours, coalesce_s=0.05)
        theirs.sendall(b"x")
        select.select([ours], [], [], 30)
        assert sock.recv(1) == b"x"  # a small read: the next waits 50 ms
        if ending == "reset":
            theirs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        theirs.close()
        assert select.select([ours], [], [], 30)[0] == [ours]  # the FIN or the RST is here
        sock.refill()
        assert clock.slept == [0.05]  # the early read waited as paho's would have
        if ending == "reset":
            with pytest.raises(ConnectionResetError):
                sock.recv(1)
        else:
            assert sock.recv(1) == b""
        assert clock.slept == [0.05]  # and paho's own read did not wait again
        assert sock.pending() == 0
    finally:
        ours.close()


def test_under_tls_the_records_before_the_end_are_handed_over_and_then_the_end_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TLS refill reads every record already arrived (`_more_records`); when it meets the end
    of the stream after them, paho gets the records, then the end with no other wait or read."""
    clock = Clock()
    monkeypatch.setattr(mqttsocket, "time", clock)
    make_ca(tmp_path)
    make_leaf(tmp_path, "server", "localhost", server_names=["127.0.0.1"])
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    asking = ssl.create_default_context(cafile=tmp_path / "ca.crt")
    ours, theirs = _tcp_pair()
    ours.setblocking(True)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        server = pool.submit(served.wrap_socket, theirs, server_side=True)
        client = asking.wrap_socket(ours, server_hostname="127.0.0.1")
        peer = server.result(30)
    try:
        client.setblocking(False)
        sock = BufferedSocket(client, coalesce_s=0.05)
        for record in (b"first", b"second"):
            peer.sendall(record)  # a TLS record each
        peer.close()
        # The FIN is here once the kernel has the connection half closed (CLOSE_WAIT).
        deadline = time.monotonic() + 30
        while client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != TCP_CLOSE_WAIT:
            assert time.monotonic() < deadline, "the peer's FIN never arrived"
            select.select([], [], [], 0.01)
        sock.refill()
        assert sock.recv(100) == b"firstsecond"
        # The end waits for paho as a byte would: paho reads it, not waits in select().
        assert sock.pending() == 1
        assert sock.recv(1) == b""
        assert sock.pending() == 0
        assert clock.slept == []  # the first read after the start, and no second one
    finally:
        client.close()


def test_the_client_says_when_a_read_is_handled_after_its_messages(
    mosquitto: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait before the next read counts from then (see the test above)."""
    events: list[str] = []
    monkeypatch.setattr(BufferedSocket, "handled", lambda _s: events.append("handled"))
    topic = unique("handled")
    sent = [(0, b"%d" % i) for i in range(20)]
    got: list[Publish] = []
    done = threading.Event()

    def on_publishes(batch: list[Publish]) -> None:
        events.append("messages")
        got.extend(batch)
        if len(got) >= len(sent):
            done.set()

    sub = BufferedClient(CallbackAPIVersion.VERSION2, client_id=unique("sub"), protocol=paho.MQTTv311)
    sub.on_message = lambda _c, _u, msg: on_publishes([(msg._topic, bytes(msg.payload), 0, False, 0)])
    sub.on_publishes = on_publishes
    publish_through(mosquitto, sub, topic=topic, sent=sent, done=done, got=got)
    # Every read's messages are followed by the client's word that they are handled.
    last = len(events) - 1 - events[::-1].index("messages")
    assert "handled" in events[last:], events


def test_a_paho_without_a_name_the_fast_path_reads_decodes_every_message_itself_warning_once(
    mosquitto: LocalServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another paho: one of the private names is gone (one this paho lacks stands for it)."""
    monkeypatch.setattr(mqttsocket, "CLIENT_NAMES", (*mqttsocket.CLIENT_NAMES, "_renamed_in_paho_3"))
    with caplog.at_level(logging.WARNING, logger="linli.edge.mqttsocket"):
        sub = BufferedClient(CallbackAPIVersion.VERSION2, client_id=unique("sub"), protocol=paho.MQTTv311)
        BufferedClient(CallbackAPIVersion.VERSION2, client_id=unique("other"))
    warnings = [r.getMessage() for r in caplog.records if "_renamed_in_paho_3" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once, not per client
    assert not sub.fast
    topic = unique("slow")
    sent = [(i % 2, f"{i}".encode() * (i % 50)) for i in range(500)]
    batches: list[list[Publish]] = []
    got: list[tuple[int, bytes]] = []
    done = threading.Event()

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        assert mqttsocket.topic_bytes(msg) == topic.encode()
        got.append((msg.qos, bytes(msg.payload)))
        if msg.qos:
            sub.ack(msg.mid, 1)
        if len(got) == len(sent):
            done.set()

    sub.manual_ack_set(True)
    sub.on_message = on_message
    sub.on_publishes = batches.append
    sockets: list[object] = []
    sub.on_socket_open = lambda _c, _u, sock: sockets.append(sock)
    publish_through(mosquitto, sub, topic=topic, sent=sent, done=done, got=got)
    assert sockets  # paho's own socket, read paho's way
    assert not any(isinstance(sock, BufferedSocket) for sock in sockets)
    assert batches == []  # nothing went through the batch decoder
    for qos in (0, 1):
        assert [p for q, p in got if q == qos] == [p for q, p in sent if q == qos]


def test_this_paho_has_every_name_the_fast_path_reads() -> None:
    client = BufferedClient(CallbackAPIVersion.VERSION2)
    assert mqttsocket.missing_paho_names(client) == []
    assert client.fast


_SIZES = (0, 1, 127, 128, 16_383, 16_384)  # across the remaining length's 1-, 2- and 3-byte forms
_PAYLOAD = st.one_of(
    st.binary(max_size=300), st.sampled_from(_SIZES).map(lambda n: bytes(i % 251 for i in range(n)))
)


@st.composite
def _publish(draw: st.DrawFn, v5: bool) -> tuple[bytes, Publish]:
    """One PUBLISH as a broker sends it (QoS 2 too, which paho keeps until its PUBREL), and what
    it carries."""
    topic = draw(st.binary(min_size=1, max_size=60))  # any bytes: invalid UTF-8 is the receiver's
    payload = draw(_PAYLOAD)
    qos = draw(st.sampled_from([0, 1, 2]))
    mid = draw(st.integers(1, 65_535)) if qos else 0
    retain, dup = draw(st.booleans()), qos > 0 and draw(st.booleans())
    properties = b""
    # MQTT 5's strings: UTF-8 without control characters.
    text = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=20)
    if v5:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if draw(st.booleans()):
            props.MessageExpiryInterval = draw(st.integers(0, 2**32 - 1))
        if draw(st.booleans()):
            props.ContentType = draw(text)
        for key, value in draw(st.lists(st.tuples(text, text), max_size=3)):
            props.UserProperty = (key, value)
        properties = props.pack()  # type: ignore[no-untyped-call]
    packet = publish_packet(topic, payload, qos, mid, retain, dup=dup, properties=properties)
    return packet, (topic, payload, qos, retain, mid)


def _read(client: paho.Client, stream: bytes, cuts: list[int]) -> list[Publish]:
    """What `client` hands over from `stream`, sent in pieces cut at `cuts`, read after each."""
    got: list[Publish] = []
    client.on_message = lambda _c, _u, m: got.append(
        (mqttsocket.topic_bytes(m), bytes(m.payload), m.qos, m.retain, m.mid)
    )
    if isinstance(client, BufferedClient):
        client.on_publishes = got.extend
    ours, peer = socket.socketpair()
    ours.setblocking(False)  # as paho sets it once connected
    client._sock = BufferedSocket(ours) if isinstance(client, BufferedClient) else ours
    sock = client._sock
    try:
        for start, end in itertools.pairwise([0, *sorted(cuts), len(stream)]):
            peer.sendall(stream[start:end])
            while select.select([ours], [], [], 0)[0] or (
                isinstance(sock, BufferedSocket) and sock.pending()
            ):
                assert client.loop_read() == paho.MQTT_ERR_SUCCESS
    finally:
        client._sock = None
        ours.close()
        peer.close()
    return got


@given(data=st.data(), v5=st.booleans())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_batch_decoder_hands_over_what_paho_decodes_whatever_the_reads(
    data: st.DataObject, v5: bool
) -> None:
    packets = data.draw(st.lists(_publish(v5), min_size=1, max_size=12))
    stream = b"".join(packet for packet, _ in packets)
    # Split at random points, as TCP segments and the buffer's refills cut a stream (a piece
    # of 100 KiB at most, so that one send never waits for a read).
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    cuts += range(100_000, len(stream), 100_000)
    protocol = paho.MQTTv5 if v5 else paho.MQTTv311
    ours = BufferedClient(CallbackAPIVersion.VERSION2, protocol=protocol, manual_ack=True)
    theirs = paho.Client(CallbackAPIVersion.VERSION2, protocol=protocol, manual_ack=True)
    decoded = _read(theirs, stream, cuts)
    ours_got = _read(ours, stream, cuts)
    assert ours_got == decoded
    # paho hands QoS 2 messages over only at the broker's PUBREL, which does not come here.
    assert decoded == [sent for _, sent in packets if sent[2] < 2]
