"""Loopback sockets for the attacks: many source addresses, counting what reaches them, and an on-path hop.

All of 127.0.0.0/8 is local on Linux, so a socket bound to 127.x.y.z can both send "from" that address
(a spoofed source, as far as the edge can tell) and count what the mesh sends back to it (a victim).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Iterator

RECV_SIZE = 4096
"""Bytes read per datagram: above anything the mesh sends on loopback."""


def addresses(prefix: str, count: int) -> Iterator[str]:
    """``count`` host addresses of the loopback network ``prefix`` (e.g. "127.20.0.0/16"), in order.

    Raises ValueError if the network holds fewer hosts.
    """
    network = ipaddress.ip_network(prefix)
    if not network.subnet_of(ipaddress.ip_network("127.0.0.0/8")) or network.num_addresses - 2 < count:
        raise ValueError(f"{prefix} is not a loopback network with {count} host addresses")
    hosts = network.hosts()
    for _ in range(count):
        yield str(next(hosts))


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Endpoint:
    """One UDP socket bound to ``(host, port)`` (0 picks a port): sends and counts every datagram it receives.

    ``sent_packets``/``sent_bytes`` and ``rx_packets``/``rx_bytes`` count payload bytes both ways;
    ``rx_media`` counts received datagrams whose first byte is 20 or more (DTLS, RTP, RTCP: RFC 7983),
    ``rx_stun`` those with a first byte below 4. ``on_datagram(endpoint, data, addr)``, if set, sees each.
    """

    def __init__(self, host: str, loop: asyncio.AbstractEventLoop,
                 on_datagram: Callable[[Endpoint, bytes, tuple], None] | None = None, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((host, port))
        self.sock.setblocking(False)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.on_datagram = on_datagram
        self.sent_packets = self.sent_bytes = 0
        self.rx_packets = self.rx_bytes = self.rx_media = self.rx_stun = 0
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self._drain)

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        """Send one datagram (a full socket buffer drops it, as the network would)."""
        try:
            self.sock.sendto(data, to)
        except (BlockingIOError, ConnectionRefusedError):
            return
        self.sent_packets += 1
        self.sent_bytes += len(data)

    def _drain(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            self.rx_packets += 1
            self.rx_bytes += len(data)
            if data and data[0] >= 20:
                self.rx_media += 1
            elif data and data[0] < 4:
                self.rx_stun += 1
            if self.on_datagram is not None:
                self.on_datagram(self, data, addr)

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


class Crowd:
    """Endpoints on ``count`` distinct addresses of ``prefix``: the spoofed sources or victims of one attack."""

    def __init__(self, prefix: str, count: int, loop: asyncio.AbstractEventLoop) -> None:
        self.members = [Endpoint(host, loop) for host in addresses(prefix, count)]

    def total(self, name: str) -> int:
        """The sum of one Endpoint counter over all members."""
        return sum(getattr(member, name) for member in self.members)

    def close(self) -> None:
        for member in self.members:
            member.close()


class OnPath:
    """A UDP hop between callers and the edge relay, where an on-path observer watches the caller's packets.

    The edge advertises ``inside`` (this hop's address) as its relay address, so callers send here. Each
    caller address gets its own outside socket on ``outside_host`` towards ``relay`` (a NAT mapping), and
    datagrams coming back on it go to that caller from ``inside``. ``checks`` keeps every STUN Binding
    request a caller sent (newest last): what the observer copies. ``media_up`` counts the callers'
    non-STUN datagrams (DTLS, SRTP); ``on_media_up()``, if set, is called after each is passed on.
    """

    def __init__(self, inside: tuple[str, int], outside_host: str, relay: tuple[str, int],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.relay = relay
        self.checks: list[bytes] = []
        self.media_up = 0
        self.on_media_up: Callable[[], None] | None = None
        self._outside_host = outside_host
        self._loop = loop
        self._mappings: dict[tuple[str, int], Endpoint] = {}
        self.inside = Endpoint(inside[0], loop, self._from_caller, port=inside[1])

    def _from_caller(self, _endpoint: Endpoint, data: bytes, caller: tuple) -> None:
        if data[:2] == b"\x00\x01":
            self.checks.append(data)
        elif data and data[0] >= 20:
            self.media_up += 1
        mapping = self._mappings.get(caller)
        if mapping is None:
            mapping = Endpoint(self._outside_host, self._loop,
                               lambda _e, back, _addr: self.inside.send(back, caller))
            self._mappings[caller] = mapping
        mapping.send(data, self.relay)
        if data and data[0] >= 20 and self.on_media_up is not None:
            self.on_media_up()

    def close(self) -> None:
        self.inside.close()
        for mapping in self._mappings.values():
            mapping.close()
