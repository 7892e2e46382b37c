"""The private hooks into aiortc and aioice still exist: fails loudly when an upgrade moves one."""

from __future__ import annotations

import aioice
import aiortc
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from voicemesh.core import hooks
from voicemesh.core.mux import BackboneMux, MuxTransport
from voicemesh.runtime.udp import bind_udp


def test_pinned_versions_and_hooks_are_present() -> None:
    assert (aiortc.__version__, aioice.__version__) == (hooks.AIORTC_VERSION, hooks.AIOICE_VERSION)
    hooks.check()


def test_check_names_a_version_mismatch(monkeypatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "9.9.9")
    with pytest.raises(hooks.HookError, match="aiortc==1.16.0"):
        hooks.check()


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
