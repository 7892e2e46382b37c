"""Lightweight aiortc callers for the overload and soak runs: each plays pre-encoded Opus (bench/load_client.py's
PacketTrack, no encoder) and counts the echo, and posts its WHIP offer from a source address of its own
choosing, so the edge's per-source rate limit sees many sources as a crowd of real callers would be.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from yarl import URL

from bench.load_client import PacketTrack, encode_speech
from voicemesh.core import hooks
from voicemesh.wire.signaling import SDP_TYPE

__all__ = ["Caller", "Sources", "encode_speech"]


@dataclass(eq=False)
class Caller:
    """One call. Times are ms from its POST: ``answer_ms`` (the edge's answer, whatever its status),
    ``ice_ms`` (iceConnectionState connected), ``connected_ms`` (connectionState connected: DTLS up).
    ``status`` and ``retry_after`` are the POST's; ``received`` counts echoed RTP packets."""

    pc: RTCPeerConnection
    track: PacketTrack
    status: int = 0
    retry_after: str = ""
    session_url: str = ""
    answer_ms: float | None = None
    ice_ms: float | None = None
    connected_ms: float | None = None
    error: str = ""
    received: int = 0
    http: aiohttp.ClientSession | None = None
    _posted: float = 0.0
    _connected: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def prepare(cls, packets: list[bytes], bind: str = "127.0.0.1") -> Caller:
        """A peer connection with its offer made and ICE gathered on ``bind``."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        caller = cls(pc, PacketTrack(packets, random.randrange(len(packets))))
        transceiver = pc.addTransceiver(caller.track, direction="sendrecv")
        transceiver.setCodecPreferences(
            [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == "audio/opus"])
        hooks.tap_receiver(transceiver.receiver, caller._on_packet)
        pc.on("iceconnectionstatechange", caller._ice)
        pc.on("connectionstatechange", caller._state)
        with hooks.gather_on(bind):
            await pc.setLocalDescription(await pc.createOffer())
        return caller

    def _on_packet(self, _packet) -> None:
        self.received += 1

    def _since_post(self) -> float:
        return round((time.monotonic() - self._posted) * 1000, 1)

    def _ice(self) -> None:
        if self.pc.iceConnectionState in ("connected", "completed") and self.ice_ms is None:
            self.ice_ms = self._since_post()

    def _state(self) -> None:
        if self.pc.connectionState == "connected" and self.connected_ms is None:
            self.connected_ms = self._since_post()
            self._connected.set()

    async def dial(self, http: aiohttp.ClientSession, url: str, timeout_s: float) -> None:
        """POST the offer once (no retry); on 201 wait until connected or ``timeout_s``. Never raises."""
        self.http = http
        self._posted = time.monotonic()
        try:
            async with http.post(url, data=self.pc.localDescription.sdp, headers={"Content-Type": SDP_TYPE}) as resp:
                body = await resp.text()
                self.answer_ms = self._since_post()
                self.status, self.retry_after = resp.status, resp.headers.get("Retry-After", "")
                if resp.status != 201:
                    return
                self.session_url = str(resp.url.join(URL(resp.headers["Location"])))
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        except (TimeoutError, aiohttp.ClientError, ValueError, KeyError) as exc:
            self.error = type(exc).__name__ if not str(exc) else str(exc)

    async def hang_up(self) -> None:
        """DELETE the session (if any, from the POST's source) and close the peer connection. Never raises."""
        self.track.halt()
        if self.session_url and self.http is not None:
            try:
                async with self.http.delete(self.session_url) as resp:
                    await resp.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                self.error = self.error or f"DELETE: {exc!r}"
        await self.pc.close()


class Sources:
    """One HTTP client per source address (127.x.y.z), handed out round robin: WHIP requests from ``count``
    distinct callers as the edge sees them."""

    def __init__(self, addresses: list[str], timeout_s: float = 20.0) -> None:
        self._clients = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(host, 0), limit=0),
                                               timeout=aiohttp.ClientTimeout(total=timeout_s))
                         for host in addresses]
        self._next = 0

    def next(self) -> aiohttp.ClientSession:
        client = self._clients[self._next % len(self._clients)]
        self._next += 1
        return client

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
