"""What the attackers send: WHIP offers, ICE connectivity checks (RFC 8445 7.2.2) and DNS queries.

STUN messages are built with aioice.stun (the library the mesh's own ICE uses), offers with aiortc.
"""

from __future__ import annotations

import base64
import os
import re
import secrets

import dns.message
import dns.rdatatype
from aioice import stun
from aiortc import RTCPeerConnection

JUNK = b"\x80" + bytes(99)
"""A 100-byte datagram that looks like RTP (RFC 7983: first byte 128..191) and authenticates as nothing."""


async def offer() -> tuple[str, str]:
    """A real WHIP offer with one audio m-line (aiortc, no candidates): (SDP, the offer's ICE ufrag)."""
    pc = RTCPeerConnection()
    pc.addTransceiver("audio")
    description = await pc.createOffer()
    await pc.close()
    return description.sdp, ice_credentials(description.sdp)[0]


def ice_fragment() -> str:
    """A trickle-ice-sdpfrag body (RFC 8840) with fresh ICE credentials: with ``If-Match: *``, an ICE restart
    (RFC 9725 4.3.3); without, a trickle PATCH."""
    return f"a=ice-ufrag:{secrets.token_hex(4)}\r\na=ice-pwd:{secrets.token_hex(16)}\r\n"


def made_up_session_id() -> str:
    """A session id of the right length and alphabet (voicemesh/wire/sessionid.py) whose MAC no mesh key made."""
    return base64.urlsafe_b64encode(secrets.token_bytes(27)).decode()


def ice_credentials(sdp: str) -> tuple[str, str]:
    """(ufrag, pwd) of the first ``a=ice-ufrag``/``a=ice-pwd`` in an SDP (RFC 8839 5.4). Raises ValueError."""
    ufrag = re.search(r"^a=ice-ufrag:(\S+)", sdp, re.M)
    pwd = re.search(r"^a=ice-pwd:(\S+)", sdp, re.M)
    if ufrag is None or pwd is None:
        raise ValueError("no ICE credentials in the SDP")
    return ufrag.group(1), pwd.group(1)


def binding_request(server_ufrag: str, client_ufrag: str, key: bytes) -> bytes:
    """A client's connectivity check to the server (RFC 8445 7.2.2): USERNAME "<server>:<client>", PRIORITY,
    ICE-CONTROLLING, a fresh transaction id, MESSAGE-INTEGRITY with ``key`` (the server's pwd, or anything
    else for a forged one) and FINGERPRINT."""
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, attributes={
        "USERNAME": f"{server_ufrag}:{client_ufrag}",
        "PRIORITY": 1853817087,
        "ICE-CONTROLLING": int.from_bytes(os.urandom(8), "big"),
    })
    request.add_message_integrity(key)
    request.add_fingerprint()
    return bytes(request)


def oversized_offer(base_sdp: str, m_lines: int) -> str:
    """``base_sdp`` (one audio m-line) with that section repeated ``m_lines`` times, all BUNDLEd: the
    many-m-line offer of issue 9 (about 300 bytes per m-line once trimmed to Opus and one fingerprint)."""
    head, _, media = base_sdp.partition("m=audio")
    media = "m=audio" + media
    media = re.sub(r"^m=audio 9 UDP/TLS/RTP/SAVPF .*$", "m=audio 9 UDP/TLS/RTP/SAVPF 96", media, flags=re.M)
    media = "".join(line for line in media.splitlines(keepends=True)
                    if not re.match(r"a=(rtpmap:(?!96 )|fingerprint:sha-(384|512)|msid:|ssrc:|extmap:|rtcp:)", line))
    sections = [media.replace("a=mid:0", f"a=mid:{i}") for i in range(m_lines)]
    head = head.replace("a=group:BUNDLE 0", "a=group:BUNDLE " + " ".join(str(i) for i in range(m_lines)))
    return head + "".join(sections)


def dns_queries(zone: str) -> list[bytes]:
    """The amplification mix: ANY and SOA at the zone apex, and a random name that does not exist (NXDOMAIN,
    with the SOA in authority). Without EDNS: the smallest queries, whose answers all fit in 512 bytes."""
    return [
        dns.message.make_query(zone, dns.rdatatype.ANY).to_wire(),
        dns.message.make_query(zone, dns.rdatatype.SOA).to_wire(),
        dns.message.make_query(f"{os.urandom(4).hex()}.{zone}", dns.rdatatype.A).to_wire(),
    ]


def dns_query(name: str) -> bytes:
    """A resolver's ordinary query: A for ``name``."""
    return dns.message.make_query(name, dns.rdatatype.A).to_wire()
