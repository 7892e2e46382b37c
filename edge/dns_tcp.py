"""DNS over TCP for the geo DNS server (RFC 7766): the same answers as UDP, 2-byte length framing.

Each message on a connection is a 2-byte big-endian length and that many bytes
(RFC 1035 4.2.2). Queries are answered in the order they arrive, as soon as each
is read, so a client may pipeline many queries without waiting (RFC 7766 6.2.1).
The protective rules, each counted in ``stats()``:

- an idle timeout: a connection on which no whole query arrives, or whose
  response cannot be written, within ``idle_timeout_s`` seconds is closed
  (RFC 7766 6.2.3), so a silent or non-reading client does not hold a slot;
- at most ``max_connections`` connections in total and ``max_per_source`` from
  one source address: a connection over either limit is closed as soon as it is
  accepted, before anything is read (RFC 7766 6.2.2 asks servers to limit them);
- a query longer than ``max_query_bytes`` closes the connection unread (a query
  is one question and a few EDNS options; only a hostile client sends more).

TCP responses do not pass the response rate limiter: the handshake proves the
source address, which is what rate limiting protects against spoofing, and the
connection limits bound what one source can ask.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter

from voicemesh.edge.geodns import GeoDNS
from voicemesh.runtime.tasks import spawn

log = logging.getLogger("voicemesh.dns")


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket on host:port ("::" takes IPv4 and IPv6 too).

    Raises OSError (address in use, not an address of this host).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(256)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class DnsTcpServer:
    """Answers DNS over TCP from ``geodns`` on the listening socket ``sock`` (see bind_tcp).

    ``idle_timeout_s`` (seconds, > 0), ``max_connections`` and ``max_per_source``
    (connections, >= 1) and ``max_query_bytes`` (bytes, 12..65535) are the rules in the
    module docstring. Raises ValueError for a setting outside those ranges.
    """

    def __init__(self, geodns: GeoDNS, sock: socket.socket, *, idle_timeout_s: float, max_connections: int,
                 max_per_source: int, max_query_bytes: int) -> None:
        if idle_timeout_s <= 0:
            raise ValueError(f"TCP idle timeout {idle_timeout_s} s is not positive")
        if max_connections < 1 or max_per_source < 1:
            raise ValueError("TCP connection limits must be at least 1")
        if not 12 <= max_query_bytes <= 65535:
            raise ValueError(f"TCP query limit {max_query_bytes} bytes is not within 12..65535")
        self.geodns = geodns
        self.sock = sock
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.max_query_bytes = max_query_bytes
        self.per_source: Counter[str] = Counter()
        self.accepted = 0
        self.queries = 0
        self.refused: Counter[str] = Counter()
        self.closed: Counter[str] = Counter()
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def connections(self) -> int:
        """Open connections now."""
        return sum(self.per_source.values())

    def start(self) -> None:
        """Start accepting (inside the running loop)."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._accept)

    def _accept(self) -> None:
        while True:
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: leave the rest queued for the next wakeup
                self.refused[type(exc).__name__] += 1
                return
            source = addr[0]
            if self.connections >= self.max_connections:
                self._refuse(conn, "total")
            elif self.per_source[source] >= self.max_per_source:
                self._refuse(conn, "per_source")
            else:
                self.accepted += 1
                self.per_source[source] += 1
                conn.setblocking(False)
                spawn(self._serve(conn, source), f"dns-tcp-{source}", self._tasks)

    def _refuse(self, conn: socket.socket, reason: str) -> None:
        self.refused[reason] += 1
        conn.close()

    async def _serve(self, conn: socket.socket, source: str) -> None:
        reason = "eof"
        writer = None
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
            while True:
                header = await asyncio.wait_for(reader.readexactly(2), self.idle_timeout_s)
                length = int.from_bytes(header, "big")
                if length > self.max_query_bytes:
                    reason = "oversize"
                    return
                query = await asyncio.wait_for(reader.readexactly(length), self.idle_timeout_s)
                self.queries += 1
                response = self.geodns.respond(query, source, tcp=True)
                if response is None:
                    continue
                writer.write(len(response).to_bytes(2, "big") + response)
                await asyncio.wait_for(writer.drain(), self.idle_timeout_s)
        except TimeoutError:
            reason = "idle"
        except asyncio.IncompleteReadError as exc:
            reason = "eof" if not exc.partial else "truncated"
        except OSError:
            reason = "error"
        finally:
            self.closed[reason] += 1
            self.per_source[source] -= 1
            if not self.per_source[source]:
                del self.per_source[source]
            if writer is not None:
                writer.transport.abort()
            else:
                conn.close()

    def stats(self) -> dict:
        """Counters: ``connections`` open, ``accepted``, ``queries``, ``refused`` by reason ("total",
        "per_source", accept errors) and ``closed`` by reason ("eof", "idle", "oversize", "truncated", "error")."""
        return {"connections": self.connections, "accepted": self.accepted, "queries": self.queries,
                "refused": dict(self.refused), "closed": dict(self.closed)}

    def close(self) -> None:
        """Stop accepting, close the listening socket and every connection."""
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for task in list(self._tasks):
            task.cancel()
