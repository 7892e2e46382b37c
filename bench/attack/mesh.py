"""The mesh under attack: a real etcd and each voicemesh part as its own process on loopback (bench/mesh),
the main edge behind an on-path hop that every legitimate call crosses.

Counters come from the parts' own ``GET /v1/status``: the edge relay's drops by reason and the
transceiver mux's counters.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from bench.mesh import CALLER, Part, PartFailed, ProcessMesh, clip_of
from bench.mesh.net import OnPath, free_udp_port
from voicemesh.app.demo import bundled_speech
from voicemesh.wire.signaling import SDP_TYPE

__all__ = ["CALLER", "Mesh", "Part", "PartFailed"]

ONPATH_INSIDE = "127.10.0.1"
"""The address the main edge advertises as its relay: the on-path hop every legitimate call crosses."""
ONPATH_OUTSIDE = "127.10.0.2"


class Mesh(ProcessMesh):
    """etcd, the main transceiver (capacity 50, in-process echo agent) and the main edge behind an on-path hop.

    ``start_edge``, ``start_transceiver`` and ``start_dns`` add parts for one attack; ``stop_part`` ends one.
    ``clip_s`` shortens legitimate calls (None: the whole bundled clip). ``etcd_auth`` runs etcd with TLS,
    client certificates and auth, a user per part (NODES); False runs it in plaintext, open to every client.
    """

    NODES = ["edge/local/edge-main", "edge/local/edge-flood", "transceiver/local/trx-main",
             "transceiver/adm/trx-adm", "dns"]
    """The etcd users ``voicemesh registry init`` creates: every part an attack starts."""

    def __init__(self, workdir: Path, clip_s: float | None = None, etcd_auth: bool = True) -> None:
        super().__init__(workdir, self.NODES, etcd_auth=etcd_auth)
        self.clip = clip_of(bundled_speech(), clip_s, workdir) if clip_s else bundled_speech()
        self.transceiver: Part | None = None
        self.edge: Part | None = None
        self.onpath: OnPath | None = None

    async def start(self) -> None:
        """Start etcd, the main transceiver and the main edge with its on-path hop. Raises PartFailed."""
        await self.open()
        self.transceiver = await self.start_transceiver("trx-main", capacity=50)
        relay_port, hop_port = free_udp_port(), free_udp_port(ONPATH_INSIDE)
        self.edge = await self.start_edge("edge-main", public=f"127.0.0.1:{relay_port}",
                                          advertise=f"{ONPATH_INSIDE}:{hop_port}")
        self.onpath = OnPath((ONPATH_INSIDE, hop_port), ONPATH_OUTSIDE, self.edge.udp,
                             asyncio.get_running_loop())

    async def close(self) -> None:
        if self.onpath is not None:
            self.onpath.close()
        await super().close()

    async def call(self, edge: Part, delay_s: float = 0.0) -> dict:  # type: ignore[override]
        """Place one legitimate call through ``edge`` with the mesh's clip, after ``delay_s``."""
        return await super().call(edge, self.clip, delay_s=delay_s)

    async def whip_post(self, url: str, sdp: str, source: str, headers: dict[str, str] | None = None,
                        ) -> tuple[int, str, str]:
        """POST an offer from local address ``source``; returns (status, body, Location) and (0, error, "")
        if the connection failed."""
        connector = aiohttp.TCPConnector(local_addr=(source, 0))
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=20)) as http:
                async with http.post(url, data=sdp.encode(), headers={"Content-Type": SDP_TYPE, **(headers or {})}
                                     ) as resp:
                    return resp.status, await resp.text(), resp.headers.get("Location", "")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return 0, repr(exc), ""

    async def delete(self, base: str, location: str) -> None:
        """End a session an attack created (DELETE on its Location under ``base``); errors ignored."""
        assert self.http is not None
        try:
            async with self.http.delete(base + location) as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            pass
