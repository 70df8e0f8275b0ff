"""Which addresses an operator's webhook may reach: public ones only, unless the config allows
private ones (`[delivery] allow_private = true`).

A webhook URL is checked when the config is read (an address written in it, `localhost`), and
its host name is resolved and checked again each time a connection is opened, and the
connection goes to the address that was checked: a name that resolved to a public address at
load and to 127.0.0.1 later (DNS rebinding) is refused too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse
from collections.abc import Iterable

import httpcore

FIX = "set allow_private = true under [delivery] to allow it"


def _kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What makes an address private, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private or address.is_unspecified or address.is_reserved or address.is_multicast:
        return "a private address"
    if not address.is_global:
        return "not a public address"
    return None


def private_address(address: str) -> str | None:
    """Why `address` (an IP address, as text) may not be reached, or None."""
    return _kind(ipaddress.ip_address(address.split("%", 1)[0]))


def private_host(url: str) -> str | None:
    """Why the host written in `url` is private (an address or localhost), or None: names are
    checked when they are resolved, at send time."""
    host = (urllib.parse.urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is a loopback name"
    try:
        why = private_address(host)
    except ValueError:
        return None  # a name
    return f"{host} is {why}" if why else None


class PublicOnly(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to public addresses: the name resolved, every address it has
    checked, and the connection made to one of those addresses."""

    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from exc
        addresses = [str(info[4][0]) for info in found]
        for address in addresses:
            why = private_address(address)
            if why:
                raise httpcore.ConnectError(f"refused: {host} resolves to {address}, {why}; {FIX}")
        return await self.inner.connect_tcp(addresses[0], port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks go over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)
