"""A paho-mqtt client that reads its socket through a buffer.

paho reads every packet with at least three recv() calls (the command byte, each byte of
the remaining length, then the body), so at 20,000 messages/s the receive thread makes
60,000 system calls a second and gives up the GIL at each, waiting to get it back from
the agent's other threads. Reading 256 KiB at a time and serving paho's small reads from
memory removes nearly all of them. paho already supports socket wrappers that hold data
of their own (TLS sockets do): when `pending()` is non-zero it reads instead of waiting
in select(), so no buffered message is ever left waiting for more bytes to arrive.
"""

from __future__ import annotations

import socket
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

READ_SIZE = 262_144
# Packets handled per loop_read() at most, so that a flood still leaves paho time to send
# acknowledgements and keepalives.
MAX_PACKETS_PER_READ = 1000


class BufferedSocket:
    """A plain TCP socket whose reads are served from a buffer; everything else passes through."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, bufsize: int) -> bytes:
        """Up to `bufsize` bytes; one system call refills the buffer only when it is empty."""
        if self._pos >= len(self._buf):
            data = self._sock.recv(max(bufsize, READ_SIZE))  # BlockingIOError passes to paho
            if len(data) <= bufsize:
                return data  # also b"" at end of stream: paho sees the connection lost
            self._buf, self._pos = data, 0
        start = self._pos
        self._pos = min(start + bufsize, len(self._buf))
        return self._buf[start : self._pos]

    def pending(self) -> int:
        """Bytes already read from the socket and not yet handed to paho."""
        return len(self._buf) - self._pos

    def __getattr__(self, name: str) -> Any:
        # send, fileno, setblocking, close, ...: the socket's own.
        return getattr(self._sock, name)


class BufferedClient(paho.Client):
    """paho's client with a buffered plain-TCP socket (TLS and websockets are left as they are)."""

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Handle every packet already buffered, not one per select() as paho does for QoS 0."""
        rc = super().loop_read(max_packets)
        for _ in range(MAX_PACKETS_PER_READ):
            sock = self._sock
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not isinstance(sock, BufferedSocket):
                break
            if not sock.pending():
                break
            rc = super().loop_read(max_packets)
        return rc

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        # An SSLSocket is a socket.socket too, but buffers by itself: wrap plain TCP only.
        if type(sock) is socket.socket:
            return BufferedSocket(sock)
        return sock
