"""The private hooks into aiortc and aioice still exist: fails loudly when an upgrade moves one."""

from __future__ import annotations

import asyncio
import threading

import aioice
import aiortc
import pylibsrtp
import pytest
from aioice import stun
from aioice.ice import Connection
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver, StreamStatistics
from aiortc.rtcrtpsender import RTCRtpSender
from OpenSSL import SSL

from voicemesh.core import hooks
from voicemesh.core.media import AgentAudioTrack
from voicemesh.core.mux import BackboneMux, MuxTransport
from voicemesh.runtime.udp import bind_udp

pytestmark = pytest.mark.integration


def test_pinned_versions_and_hooks_are_present() -> None:
    assert (aiortc.__version__, aioice.__version__) == (hooks.AIORTC_VERSION, hooks.AIOICE_VERSION)
    hooks.check()


def test_check_names_a_version_mismatch(monkeypatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "9.9.9")
    with pytest.raises(hooks.HookError, match="aiortc==1.16.0"):
        hooks.check()


def test_check_names_a_moved_receiver_hook(monkeypatch) -> None:
    def data_received(self, data: bytes) -> None:
        """data_received without its component argument, as an aioice upgrade might leave it."""

    monkeypatch.setattr(Connection, "data_received", data_received)
    with pytest.raises(hooks.HookError, match="data_received"):
        hooks.check()


def test_check_names_a_moved_check_list(monkeypatch) -> None:
    init = Connection.__init__

    def without_check_list(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        del self._check_list

    monkeypatch.setattr(Connection, "__init__", without_check_list)
    with pytest.raises(hooks.HookError, match="_check_list"):
        hooks.check()


async def test_forget_address_drops_the_prflx_candidate_and_its_check() -> None:
    caller = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    caller.addTransceiver("audio")
    await caller.setLocalDescription(await caller.createOffer())
    offer = "".join(line for line in caller.localDescription.sdp.splitlines(keepends=True)
                    if not line.startswith("a=candidate:"))
    answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    await answerer.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    conn = hooks.ice_connection(answerer)
    mux = BackboneMux(bind_udp("127.0.0.1", 0))
    transport = MuxTransport(mux, ("192.0.2.7", 3478))
    transport.protocol = hooks.attach_protocol(conn, transport, ("192.0.2.7", 3478))
    await answerer.setLocalDescription(await answerer.createAnswer())
    while conn.remote_password is None:
        await asyncio.sleep(0.01)
    spoofed = [("203.0.113.1", 1000), ("203.0.113.2", 2000)]
    for addr in spoofed:
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        request.attributes["USERNAME"] = f"{conn.local_username}:{conn.remote_username}"
        request.attributes["PRIORITY"] = 1
        request.attributes["ICE-CONTROLLING"] = 1
        request.add_message_integrity(conn.local_password.encode())
        transport.protocol.datagram_received(bytes(request), addr)
    await asyncio.sleep(0.05)
    assert sorted((c.host, c.port) for c in conn.remote_candidates) == spoofed
    checks = [pair.task for pair in conn._check_list]

    hooks.forget_address(transport.protocol, spoofed[0])
    await asyncio.sleep(0)
    assert [(c.host, c.port) for c in conn.remote_candidates] == [spoofed[1]]
    assert [pair.remote_addr for pair in conn._check_list] == [spoofed[1]]
    assert sum(task.cancelled() for task in checks if task is not None) == 1, "its triggered check stops"
    await answerer.close()
    await caller.close()
    mux.close()


async def test_hooks_shape_the_answer() -> None:
    caller = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    caller.addTransceiver("audio")
    await caller.setLocalDescription(await caller.createOffer())
    answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    await answerer.setRemoteDescription(RTCSessionDescription(caller.localDescription.sdp, "offer"))

    conn = hooks.ice_connection(answerer)
    hooks.set_local_ufrag(conn, "AbCd+/0123456789abcdefghijkl")
    mux = BackboneMux(bind_udp("127.0.0.1", 0))
    transport = MuxTransport(mux, ("192.0.2.7", 3478))
    transport.protocol = hooks.attach_protocol(conn, transport, ("192.0.2.7", 3478))
    packets = []
    hooks.tap_receiver(answerer.getTransceivers()[0].receiver, packets.append)
    await answerer.setLocalDescription(await answerer.createAnswer())
    answer = answerer.localDescription.sdp

    assert "a=ice-ufrag:AbCd+/0123456789abcdefghijkl" in answer
    candidates = [line for line in answer.splitlines() if line.startswith("a=candidate:")]
    assert len(candidates) == 1 and "192.0.2.7 3478 typ host" in candidates[0]
    with pytest.raises(ValueError):
        hooks.set_local_ufrag(conn, "bad ufrag!")
    await answerer.close()
    await caller.close()
    mux.close()


def test_check_names_a_missing_ice_gatherer_connection(monkeypatch) -> None:
    class Gatherer:
        """An RTCIceGatherer whose aioice Connection moved."""

    monkeypatch.setattr(hooks, "RTCIceGatherer", Gatherer)
    with pytest.raises(hooks.HookError, match="RTCIceGatherer has no _connection"):
        hooks.check()


def test_check_names_a_changed_host_address_function(monkeypatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda families: [])
    with pytest.raises(hooks.HookError, match="get_host_addresses no longer takes"):
        hooks.check()


def test_check_names_gathering_that_no_longer_asks_for_host_addresses(monkeypatch) -> None:
    async def gather_candidates(self) -> None:
        """Gathers without asking aioice.ice for the host's addresses."""

    monkeypatch.setattr(aioice.ice.Connection, "gather_candidates", gather_candidates)
    with pytest.raises(hooks.HookError, match="gather_candidates no longer calls get_host_addresses"):
        hooks.check()


async def test_gather_on_limits_gathering_in_its_block_only() -> None:
    async def offer_hosts(pc: RTCPeerConnection) -> set[str]:
        pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        lines = [line for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate:")]
        await pc.close()
        return {line.split()[4] for line in lines}

    with hooks.gather_on("127.0.0.1"):
        assert await offer_hosts(RTCPeerConnection(RTCConfiguration(iceServers=[]))) == {"127.0.0.1"}
    assert "127.0.0.1" not in await offer_hosts(RTCPeerConnection(RTCConfiguration(iceServers=[])))
    hooks.check()


def test_check_names_a_moved_ice_restart_hook(monkeypatch) -> None:
    init = Connection.__init__

    def without_nominating(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        del self._nominating

    monkeypatch.setattr(Connection, "__init__", without_nominating)
    with pytest.raises(hooks.HookError, match="_nominating"):
        hooks.check()
    monkeypatch.setattr(Connection, "__init__", init)
    monkeypatch.setattr(Connection, "local_password", "a plain attribute")
    with pytest.raises(hooks.HookError, match="local_password is no longer a property"):
        hooks.check()


async def test_restart_ice_needs_a_connected_ice_and_valid_credentials() -> None:
    conn = Connection(ice_controlling=False)
    with pytest.raises(ValueError, match="not connected"):
        hooks.restart_ice(conn, "AbCd0123", "p" * 22, "wxyz", "q" * 22)
    conn._nominated[1] = object()
    with pytest.raises(ValueError):
        hooks.restart_ice(conn, "AbCd0123", "short", "wxyz", "q" * 22)
    assert conn.local_password != "short", "nothing changes when a credential is refused"
    hooks.restart_ice(conn, "AbCd0123", "p" * 22, "wxyz", "q" * 22)
    assert (conn.local_username, conn.local_password, conn.remote_username, conn.remote_password) == (
        "AbCd0123", "p" * 22, "wxyz", "q" * 22)


def test_check_names_a_pylibsrtp_version_mismatch(monkeypatch) -> None:
    monkeypatch.setattr(pylibsrtp, "__version__", "9.9.9")
    with pytest.raises(hooks.HookError, match="pylibsrtp==1.0.0"):
        hooks.check()


def test_check_names_a_changed_receiver_start(monkeypatch) -> None:
    async def receive(self, parameters) -> None:
        """aiortc's receive() after an upgrade that receive_without_decoder has not caught up with."""

    monkeypatch.setattr(RTCRtpReceiver, "receive", receive)
    with pytest.raises(hooks.HookError, match="RTCRtpReceiver.receive changed"):
        hooks.check()


def test_check_names_a_dtls_read_whose_depth_the_pacing_no_longer_matches(monkeypatch) -> None:
    async def _recv_next(self) -> None:
        await self.transport._recv()

    monkeypatch.setattr(RTCDtlsTransport, "_recv_next", _recv_next)
    with pytest.raises(hooks.HookError, match="PACE_TURNS"):
        hooks.check()


def test_check_names_a_peer_connection_that_makes_its_certificate_otherwise(monkeypatch) -> None:
    def init(self, configuration=None) -> None:
        """An RTCPeerConnection.__init__ that no longer asks RTCCertificate.generateCertificate."""

    monkeypatch.setattr(RTCPeerConnection, "__init__", init)
    with pytest.raises(hooks.HookError, match="no longer makes its certificate"):
        hooks.check()


async def connected_pair(answerer: RTCPeerConnection, fingerprint: str | None = None) -> RTCPeerConnection:
    """A caller connected (or failed) to ``answerer`` over loopback, both with an audio track; with
    ``fingerprint``, the caller is told the answerer's certificate has that sha-256 fingerprint instead."""
    caller = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    caller.addTrack(AgentAudioTrack())
    with hooks.gather_on("127.0.0.1"):
        await caller.setLocalDescription(await caller.createOffer())
        await answerer.setRemoteDescription(caller.localDescription)
        answerer.addTrack(AgentAudioTrack())
        for transceiver in answerer.getTransceivers():
            hooks.receive_without_decoder(transceiver.receiver)
        await answerer.setLocalDescription(await answerer.createAnswer())
    answer = answerer.localDescription.sdp
    if fingerprint is not None:
        answer = "".join(f"a=fingerprint:sha-256 {fingerprint}\r\n" if line.startswith("a=fingerprint:sha-256")
                         else line for line in answer.splitlines(keepends=True))
    await caller.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    for _ in range(250):
        if caller.connectionState in ("connected", "failed") and answerer.connectionState in ("connected", "failed"):
            break
        await asyncio.sleep(0.02)
    return caller


async def test_peer_connections_share_one_certificate_and_still_check_the_peer() -> None:
    """Peer connections made inside new_peer_connections_use share its certificate, its fingerprints and one DTLS
    context (with OpenSSL's session cache off: no call resumes another's session), and each still connects
    with SRTP keys of its own; a caller told another fingerprint refuses the handshake; peer connections
    made outside the block make their own certificate."""
    certificate = hooks.SharedCertificate.generateCertificate()
    with hooks.new_peer_connections_use(certificate):
        answerers = [RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(3)]
    callers = [await connected_pair(answerer) for answerer in answerers[:2]]
    assert [pc.connectionState for pc in (*answerers[:2], *callers)] == ["connected"] * 4
    dtls = [answerer.getTransceivers()[0].receiver.transport for answerer in answerers[:2]]
    assert dtls[0]._ssl.get_context() is dtls[1]._ssl.get_context()
    assert dtls[0]._ssl.get_context().get_session_cache_mode() == SSL.SESS_CACHE_OFF
    assert all(d.getLocalParameters().fingerprints == certificate.getFingerprints() for d in dtls)
    keys = [hooks.srtp_sessions(d)[0] for d in dtls]
    assert keys[0] is not keys[1] and dtls[0]._ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 60) != \
        dtls[1]._ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 60), "each session has keys of its own"
    assert [t.name for t in threading.enumerate()].count("audio-decoder") == 2, "the callers' only"

    other = hooks.SharedCertificate.generateCertificate().getFingerprints()[0].value
    refused = await connected_pair(answerers[2], fingerprint=other)
    assert refused.connectionState == "failed", "the fingerprint in the SDP is still checked"

    outside = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    outside.addTransceiver("audio")
    await outside.setLocalDescription(await outside.createOffer())
    assert certificate.getFingerprints()[0].value not in outside.localDescription.sdp
    for pc in (*answerers, *callers, refused, outside):
        await pc.close()


def test_check_names_receiver_statistics_that_lost_a_counter(monkeypatch) -> None:
    init = StreamStatistics.__init__

    def without_jitter(self, clockrate: int) -> None:
        init(self, clockrate)
        del self._jitter_q4

    monkeypatch.setattr(StreamStatistics, "__init__", without_jitter)
    with pytest.raises(hooks.HookError, match="_jitter_q4"):
        hooks.check()


def test_check_names_a_sender_without_its_report_fields(monkeypatch) -> None:
    def init(self, trackOrKind, transport) -> None:
        """An RTCRtpSender that keeps its report counters elsewhere."""

    monkeypatch.setattr(RTCRtpSender, "__init__", init)
    with pytest.raises(hooks.HookError, match="_RTCRtpSender__ntp_timestamp"):
        hooks.check()


async def test_stop_rtcp_takes_over_only_rtcp_tasks_that_have_not_run() -> None:
    """Right after "connected" (as the transceiver calls it) both of aiortc's per-session RTCP tasks are
    cancelled before they run, and closing still completes; tasks already running (they would send a BYE
    when cancelled) are left alone."""
    with hooks.gather_on("127.0.0.1"):
        caller, answerer = RTCPeerConnection(RTCConfiguration(iceServers=[])), RTCPeerConnection(
            RTCConfiguration(iceServers=[]))
        caller.addTrack(AgentAudioTrack())
        answerer.addTrack(AgentAudioTrack())
        taken: list[bool] = []

        @answerer.on("connectionstatechange")
        def on_state() -> None:
            if answerer.connectionState == "connected":
                audio = answerer.getTransceivers()[0]
                asyncio.get_running_loop().call_soon(
                    lambda: taken.append(hooks.stop_rtcp(audio.sender, audio.receiver)))

        await caller.setLocalDescription(await caller.createOffer())
        await answerer.setRemoteDescription(caller.localDescription)
        await answerer.setLocalDescription(await answerer.createAnswer())
        await caller.setRemoteDescription(answerer.localDescription)
    while not taken or caller.connectionState != "connected":
        await asyncio.sleep(0.02)
    assert taken == [True]
    await asyncio.sleep(0.1)
    audio = caller.getTransceivers()[0]
    assert not hooks.stop_rtcp(audio.sender, audio.receiver), "running tasks are not taken over"
    await answerer.close()
    await caller.close()
