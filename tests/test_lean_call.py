"""A real aiortc caller through the edge relay to a transceiver on each media path: the lean path carries the
echo, aiortc's RTCP still reports it both ways (fed by the lean path's counters), and no session keeps an
idle decoder thread."""

from __future__ import annotations

import asyncio
import threading
import time
from fractions import Fraction

import aiohttp
import av
import pytest
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver, RTCSessionDescription
from yarl import URL

from voicemesh.app import audio
from voicemesh.app.demo import LOOPBACK, bundled_speech, embedded_mesh
from voicemesh.core import hooks
from voicemesh.core.media import RTP_CLOCK_HZ, SAMPLES_PER_FRAME, OpusEncoder

pytestmark = pytest.mark.integration


class OpusTrack(MediaStreamTrack):
    """Sends the bundled speech as pre-encoded 20 ms Opus packets, one every 20 ms."""

    kind = "audio"

    def __init__(self, limit: int | None = None) -> None:
        super().__init__()
        self.packets = OpusEncoder(RTP_CLOCK_HZ).encode(audio.load_wav_mono(bundled_speech(), RTP_CLOCK_HZ).tobytes())
        self.limit = limit
        self.sent = 0
        self._start = 0.0

    async def recv(self) -> av.Packet:
        """The next packet on its 20 ms schedule; after ``limit`` packets, nothing more (the call stays up)."""
        self._start = self._start or time.monotonic()
        await asyncio.sleep(self._start + self.sent * 0.02 - time.monotonic())
        if self.limit is not None and self.sent >= self.limit:
            await asyncio.Future()
        packet = av.Packet(self.packets[self.sent % len(self.packets)])
        packet.pts = self.sent * SAMPLES_PER_FRAME
        packet.time_base = Fraction(1, RTP_CLOCK_HZ)
        self.sent += 1
        return packet


async def stats_of(pc: RTCPeerConnection, kind: str) -> list:
    return [s for s in (await pc.getStats()).values() if s.type == kind]


async def dial(whip_url: str, http: aiohttp.ClientSession, track: OpusTrack, on_echo, *,
               setup: str = "actpass", on_connected=None) -> tuple[RTCPeerConnection, RTCRtpTransceiver, str]:
    """A caller sending ``track`` (Opus only) whose echoed packets go to ``on_echo``, offering the DTLS role
    ``setup`` (RFC 8842 5.2); ``on_connected()`` runs as its connection state becomes "connected". Returns
    it, its transceiver and the session URL; the answer is in ``caller.remoteDescription``."""
    caller = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = caller.addTransceiver(track, direction="sendrecv")
    transceiver.setCodecPreferences(
        [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == "audio/opus"])
    hooks.tap_receiver(transceiver.receiver, on_echo)
    if on_connected is not None:
        caller.on("connectionstatechange", lambda: caller.connectionState == "connected" and on_connected())
    with hooks.gather_on(LOOPBACK):
        await caller.setLocalDescription(await caller.createOffer())
    offer = caller.localDescription.sdp.replace("a=setup:actpass", f"a=setup:{setup}")
    async with http.post(whip_url, data=offer, headers={"Content-Type": "application/sdp"}) as resp:
        assert resp.status == 201
        answer, location = await resp.text(), resp.headers["Location"]
    await caller.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return caller, transceiver, str(URL(whip_url).join(URL(location)))


@pytest.mark.parametrize("media_path", ["lean", "aiortc"])
async def test_echo_and_rtcp_on_each_media_path(media_path: str) -> None:
    async with embedded_mesh(media_path=media_path) as mesh, aiohttp.ClientSession() as http:
        track = OpusTrack()
        echoed: list[bytes] = []
        caller, transceiver, session_url = await dial(mesh.whip_url, http, track,
                                                      lambda packet: echoed.append(packet.payload))
        [session] = mesh.transceiver.sessions.values()
        for _ in range(600):
            if (len(echoed) >= 150 and await stats_of(caller, "remote-inbound-rtp")
                    and [s for s in await stats_of(session.pc, "remote-inbound-rtp") if s.roundTripTime is not None]):
                break
            await asyncio.sleep(0.02)

        assert set(echoed) <= set(track.packets) and len(echoed) >= 150, "the agent's echo comes back unchanged"
        decoders = [t for t in threading.enumerate() if t.name == "audio-decoder"]
        assert len(decoders) == 1, "the caller's own aiortc receiver started one, the transceiver's none"
        [inbound] = await stats_of(session.pc, "inbound-rtp")
        assert inbound.packetsReceived >= 150 and inbound.packetsLost == 0, "the transceiver's receiver counts"
        [report] = await stats_of(caller, "remote-inbound-rtp")
        assert report.packetsLost == 0 and report.roundTripTime is not None, "receiver reports reach the caller"
        [sender_report] = await stats_of(caller, "remote-outbound-rtp")
        assert sender_report.packetsSent > 0, "sender reports carry what was sent"
        [ours] = await stats_of(session.pc, "remote-inbound-rtp")
        assert ours.roundTripTime is not None, "the caller's receiver reports answer our sender reports"
        counters = mesh.transceiver.media_counters
        if media_path == "lean":
            assert echoed[0] == track.packets[0], "the caller's first frame came back"
            assert counters["lean_rx"] >= 100 and counters["lean_tx"] >= 100, "past the first packets, the lean path carries it"
            assert counters["rtcp_tx"] >= 1, "the lean path sends the reports, on the shared tick"
            assert set(counters) <= {"lean_rx", "lean_tx", "early_rtp", "rtcp_tx"}, "nothing dropped"
        else:
            assert counters == {}

        async with http.delete(session_url) as resp:
            assert resp.status == 200
        await caller.close()


async def test_pcm16_echo_returns_every_frame_sent() -> None:
    """Decoded straight at the agent's rate, each 20 ms packet is one 20 ms frame for the agent and one
    packet back: nothing is left in the encoder when the caller stops (a resampler's delay left the last
    partial frame there), and the frames sent before our keys existed come back too."""
    async with embedded_mesh(agent_codec="pcm16", media_path="lean") as mesh, aiohttp.ClientSession() as http:
        track = OpusTrack(limit=100)
        echoed: list[int] = []
        caller, _, session_url = await dial(mesh.whip_url, http, track,
                                            lambda packet: echoed.append(packet.sequence_number))
        heard = -1
        while len(echoed) != heard or track.sent < 100:
            heard = len(echoed)
            await asyncio.sleep(0.5)
        assert len(echoed) == track.sent == 100
        async with http.delete(session_url) as resp:
            assert resp.status == 200
        await caller.close()


@pytest.mark.parametrize(("offered", "answered"), [("actpass", "passive"), ("passive", "active"), ("active", "passive")])
async def test_the_answer_takes_the_dtls_server_role_when_the_offer_leaves_it(offered: str, answered: str) -> None:
    """Left the role (actpass), the transceiver answers as the DTLS server, whose final flight completes the
    handshake on its side first: its lean path is up before the caller's DTLS connects, so the caller's first
    packet is read as it arrives. A role the offer fixes is kept, and then the caller's first frame, which
    may come before our keys exist, still comes back (held until they do)."""
    async with embedded_mesh(media_path="lean") as mesh, aiohttp.ClientSession() as http:
        track = OpusTrack()
        echoed: list[bytes] = []
        ready: list[bool] = []

        def on_connected() -> None:
            ready.extend(session.lean is not None for session in mesh.transceiver.sessions.values())

        caller, _, session_url = await dial(mesh.whip_url, http, track, lambda packet: echoed.append(packet.payload),
                                            setup=offered, on_connected=on_connected)
        assert f"a=setup:{answered}" in caller.remoteDescription.sdp
        for _ in range(400):
            if echoed:
                break
            await asyncio.sleep(0.02)
        assert echoed and echoed[0] == track.packets[0], "the caller's first frame came back"
        if answered == "passive":
            assert ready == [True], "the transceiver's lean path was up when the caller's DTLS connected"
        hold = mesh.transceiver.setup_hold
        assert hold.counters["holds"] == 1 and not hold.holding, "the session held others' set-up until its first audio"
        async with http.delete(session_url) as resp:
            assert resp.status == 200
        await caller.close()
