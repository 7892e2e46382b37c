"""Real aiortc offers for tests that post to the WHIP front or the transceiver API."""

from __future__ import annotations


async def real_offer(bundle: bool = True, audio: bool = True) -> str:
    """A real aiortc offer (Opus audio, ICE credentials, host candidates gathered), optionally without its
    BUNDLE group or with video instead of audio, as a browser's or the test client's would be."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio" if audio else "video")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp if bundle else sdp.replace("a=group:BUNDLE 0\r\n", "")
