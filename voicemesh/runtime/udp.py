"""Non-blocking UDP sockets drained in a loop: the I/O half of the relay and the mux.

asyncio's default datagram transport reads one datagram per event-loop pass into
a 256 KiB buffer; a reader callback that drains the socket until EAGAIN reads
many datagrams per wake-up into a small one. Both the edge relay and the
transceiver mux use this module so that the hot path is one ``recvfrom`` and
one ``sendto`` (``make bench`` measures it).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

RECV_SIZE = 2048
"""Bytes read per datagram: above any WebRTC datagram (MTU-sized) plus a frame header."""

DRAIN_BATCH = 64
"""Datagrams read per wake-up before yielding to the loop, so one busy socket cannot starve others."""


def bind_udp(host: str, port: int, *, rcvbuf: int = 1 << 20, reuse_port: bool = False) -> socket.socket:
    """Bind a non-blocking UDP socket on ``(host, port)`` (port 0 picks one).

    ``rcvbuf`` (bytes) is kept modest on purpose: a large receive buffer turns an
    overload into 100+ ms of queueing, and for voice a drop is better than a delay.
    ``reuse_port`` sets SO_REUSEPORT so several worker processes share the port.
    Raises OSError if the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def add_drain_reader(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    on_datagram: Callable[[bytes, tuple[Any, ...]], None],
    peer: tuple[str, int] | None = None,
) -> None:
    """Call ``on_datagram(data, addr)`` for every datagram on ``sock``.

    Reads up to DRAIN_BATCH datagrams per readiness event. For a socket
    connected to ``peer``, reads with ``recv`` and passes ``peer`` as the
    address: Python builds no address tuple per datagram.
    ``on_datagram`` must not raise (it runs once per packet); socket errors
    such as ICMP port unreachable surfacing as ConnectionRefusedError are
    skipped. Remove with ``loop.remove_reader(sock.fileno())``.
    """
    recvfrom, recv = sock.recvfrom, sock.recv

    def drain() -> None:
        for _ in range(DRAIN_BATCH):
            try:
                data, addr = recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            on_datagram(data, addr)

    def drain_connected(source: tuple[str, int]) -> None:
        for _ in range(DRAIN_BATCH):
            try:
                data = recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            on_datagram(data, source)

    if peer is None:
        loop.add_reader(sock.fileno(), drain)
    else:
        loop.add_reader(sock.fileno(), drain_connected, peer)


def sockname(sock: socket.socket) -> tuple[str, int]:
    """The bound ``(host, port)`` of ``sock`` (IPv6 four-tuples cut to two)."""
    name = sock.getsockname()
    return name[0], name[1]
