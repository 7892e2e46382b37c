"""Every reach into aiortc's and aioice's private internals, in one place.

aiortc has no public knob for the server ICE ufrag, for the sockets aioice
uses, or for taking Opus packets off the wire without its jitter buffer and
decoder; aioice none for handing it DTLS/SRTP that arrived through the mux, or
for forgetting a peer-reflexive address; and aioice has no ICE restart (RFC 8445 9). The transceiver needs
all six, so this
module reads and writes a handful of private attributes; and aioice has no option
to gather on one chosen address, which the test client (``voicemesh call --bind``)
needs. The lean media path (core/lean.py) also takes the SRTP sessions aiortc
negotiated, feeds the counters aiortc's RTCP reports are built from, and keeps aiortc
from starting a decoder thread for every receiver. A call's set-up reuses one DTLS
certificate, its fingerprints and its DTLS context per process (aiortc makes all three
anew for every peer connection). aiortc, aioice and pylibsrtp are
pinned exactly in pyproject.toml;
``check()`` runs at transceiver start and tests/test_hooks.py runs it in CI, so
an upgrade that moves a hook fails loudly instead of silently breaking calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import inspect
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import aioice
import aiortc
import pylibsrtp
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.ice import CandidatePair, Connection, StunProtocol
from aiortc import RTCPeerConnection
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsFingerprint, RTCDtlsTransport, SRTPProtectionProfile
from aiortc.rtcicetransport import RTCIceGatherer
from aiortc.rtcrtpreceiver import RTCRtpReceiver, StreamStatistics
from aiortc.rtcrtpsender import RTCRtpSender
from OpenSSL import SSL

AIORTC_VERSION = "1.16.0"
AIOICE_VERSION = "0.13.0"
PYLIBSRTP_VERSION = "1.0.0"

_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"
_REMOTE_STREAMS = "_RTCRtpReceiver__remote_streams"
_DECODER_THREAD = "_RTCRtpReceiver__decoder_thread"
_RECEIVER_START = ("_RTCRtpReceiver__started", "_RTCRtpReceiver__codecs", "_RTCRtpReceiver__rtx_ssrc",
                   "_RTCRtpReceiver__rtcp_task")
_RECEIVE_SHA256 = "d6d8d8d7a0bf4e95f3fb7cb78cf275d0a5f50c4912e0cb8498272008779916ef"
"""sha256 of aiortc 1.16.0's ``RTCRtpReceiver.receive`` source, which receive_without_decoder repeats but
for the decoder thread: any change to it must be reviewed there."""
_SENDER_REPORT = ("_RTCRtpSender__ntp_timestamp", "_RTCRtpSender__rtp_timestamp",
                  "_RTCRtpSender__packet_count", "_RTCRtpSender__octet_count")
_RTCP_TASKS: dict[type[RTCRtpSender] | type[RTCRtpReceiver], tuple[str, str, str]] = {
    RTCRtpSender: ("_RTCRtpSender__rtcp_task", "_RTCRtpSender__rtcp_started", "_RTCRtpSender__rtcp_exited"),
    RTCRtpReceiver: ("_RTCRtpReceiver__rtcp_task", "_RTCRtpReceiver__rtcp_started", "_RTCRtpReceiver__rtcp_exited"),
}
_SENDER_LSR = ("_RTCRtpSender__lsr", "_RTCRtpSender__lsr_time")
_SENDER_CNAME = "_RTCRtpSender__cname"
_RECEIVER_LSR = ("_RTCRtpReceiver__lsr", "_RTCRtpReceiver__lsr_time")
_STREAM_FIELDS = ("base_seq", "max_seq", "cycles", "packets_received", "_jitter_q4", "_last_arrival",
                  "_last_timestamp")


class HookError(RuntimeError):
    """aiortc or aioice no longer look the way core/hooks.py expects."""


def check() -> None:
    """Verify the pinned versions and every private attribute used here.

    Raises HookError naming what moved. Cheap: call it once at start-up.
    """
    if (aiortc.__version__, aioice.__version__, pylibsrtp.__version__) != (
            AIORTC_VERSION, AIOICE_VERSION, PYLIBSRTP_VERSION):
        raise HookError(
            f"voicemesh needs aiortc=={AIORTC_VERSION}, aioice=={AIOICE_VERSION} and "
            f"pylibsrtp=={PYLIBSRTP_VERSION}, found aiortc {aiortc.__version__}, aioice {aioice.__version__} "
            f"and pylibsrtp {pylibsrtp.__version__}"
        )
    conn = Connection(ice_controlling=False)
    for name in ("_local_username", "_protocols", "_local_candidates",
                 "_local_candidates_start", "_local_candidates_end", "data_received"):
        if not hasattr(conn, name):
            raise HookError(f"aioice.Connection has no {name}")
    for name in ("_remote_candidates", "_check_list", "_nominated", "_early_checks", "_nominating",
                 "_local_password", "_closing", "remote_username", "remote_password"):
        if not hasattr(conn, name):
            raise HookError(f"aioice.Connection has no {name}")
    for name in ("local_username", "local_password"):
        if not isinstance(getattr(Connection, name, None), property):
            raise HookError(f"aioice.Connection.{name} is no longer a property over _{name}")
    if list(inspect.signature(Connection.data_received).parameters) != ["self", "data", "component"]:
        raise HookError("aioice.Connection.data_received is no longer data_received(data, component)")
    for name in ("datagram_received", "connection_made", "connection_lost", "close"):
        if not hasattr(StunProtocol, name):
            raise HookError(f"aioice.StunProtocol has no {name}")
    if "self.receiver = receiver" not in inspect.getsource(StunProtocol.__init__):
        raise HookError("aioice.StunProtocol no longer keeps its Connection as receiver")
    pair = CandidatePair(None, Candidate("x", 1, "udp", 1, "192.0.2.1", 9, "prflx"))  # type: ignore[arg-type]
    for name in ("task", "nominated", "protocol", "remote_candidate"):
        if not hasattr(pair, name):
            raise HookError(f"aioice.CandidatePair has no {name}")
    if "__jitter_buffer" not in inspect.getsource(RTCRtpReceiver.__init__):
        raise HookError("RTCRtpReceiver no longer has a jitter buffer attribute")
    for name in ("validate_username", "validate_password"):
        if not hasattr(aioice.ice, name):
            raise HookError(f"aioice.ice has no {name}")
    if "self.local_password" not in inspect.getsource(Connection.request_received):
        raise HookError("aioice.Connection.request_received no longer checks integrity with local_password")
    if "self.remote_password" not in inspect.getsource(Connection.query_consent):
        raise HookError("aioice.Connection.query_consent no longer reads remote_password on each round")
    if not isinstance(getattr(RTCIceGatherer(), "_connection", None), Connection):
        raise HookError("RTCIceGatherer has no _connection (an aioice Connection)")
    if list(inspect.signature(aioice.ice.get_host_addresses).parameters) != ["use_ipv4", "use_ipv6"]:
        raise HookError("aioice.ice.get_host_addresses no longer takes (use_ipv4, use_ipv6)")
    if "get_host_addresses(" not in inspect.getsource(Connection.gather_candidates):
        raise HookError("aioice.Connection.gather_candidates no longer calls get_host_addresses")
    _check_lean()


def _check_lean() -> None:
    """The private parts of aiortc that the lean media path (core/lean.py) uses, the DTLS role the answer
    takes (answer_as_dtls_server), and the depth of the DTLS read that core/priority.py's pacing counts on."""
    if 'self._role = "auto"' not in inspect.getsource(RTCDtlsTransport.__init__):
        raise HookError("RTCDtlsTransport no longer starts with _role 'auto'")
    if not callable(getattr(RTCDtlsTransport, "_set_role", None)):
        raise HookError("RTCDtlsTransport has no _set_role")
    if "dtlsTransport._role" not in inspect.getsource(RTCPeerConnection.createAnswer):
        raise HookError("RTCPeerConnection.createAnswer no longer takes the DTLS role from dtlsTransport._role")
    if "await asyncio.wait_for(self.transport._recv()" not in inspect.getsource(RTCDtlsTransport._recv_next):
        raise HookError("RTCDtlsTransport._recv_next no longer reads a handshake datagram under asyncio.wait_for: "
                        "review core/priority.py PACE_TURNS")
    dtls_init = inspect.getsource(RTCDtlsTransport.__init__)
    for name in ("self._rx_srtp", "self._tx_srtp"):
        if name not in dtls_init:
            raise HookError(f"RTCDtlsTransport no longer has {name[5:]}")
    if "self._rx_srtp = Session(" not in inspect.getsource(RTCDtlsTransport._setup_srtp):
        raise HookError("RTCDtlsTransport._setup_srtp no longer keeps a pylibsrtp Session in _rx_srtp")
    for name in ("protect", "unprotect"):
        if not hasattr(pylibsrtp.Session, name):
            raise HookError(f"pylibsrtp.Session has no {name}")
    session_init = inspect.getsource(pylibsrtp.Session.__init__)
    for name in ("self._srtp = ", "self._cdata = ", "self._buffer = ffi.buffer(self._cdata)"):
        if name not in session_init:
            raise HookError(f"pylibsrtp.Session no longer sets {name.split(' =')[0]}")
    for name in ("srtp_protect", "srtp_unprotect"):
        if not hasattr(getattr(pylibsrtp, "lib", None), name):
            raise HookError(f"pylibsrtp no longer imports its cffi binding as lib with {name}")
    if not isinstance(getattr(pylibsrtp, "SRTP_MAX_TRAILER_LEN", None), int) or not isinstance(
            getattr(pylibsrtp, "ERRORS", None), list):
        raise HookError("pylibsrtp no longer has SRTP_MAX_TRAILER_LEN and ERRORS")
    receiver_init = inspect.getsource(RTCRtpReceiver.__init__)
    for name in (_REMOTE_STREAMS, _DECODER_THREAD, *_RECEIVER_START):
        if f"self.__{name.split('__', 1)[1]}" not in receiver_init:
            raise HookError(f"RTCRtpReceiver has no {name}")
    if hashlib.sha256(inspect.getsource(RTCRtpReceiver.receive).encode()).hexdigest() != _RECEIVE_SHA256:
        raise HookError("RTCRtpReceiver.receive changed: review core/hooks.py receive_without_decoder")
    _check_certificate()
    sender_init = inspect.getsource(RTCRtpSender.__init__)
    for name in _SENDER_REPORT:
        if f"self.__{name.split('__', 1)[1]} = 0" not in sender_init:
            raise HookError(f"RTCRtpSender has no {name}")
    for cls, names in _RTCP_TASKS.items():
        init = inspect.getsource(cls.__init__)
        for name in names:
            if f"self.__{name.split('__', 1)[1]}" not in init:
                raise HookError(f"{cls.__name__} has no {name}")
        if "__rtcp_started.set()" not in inspect.getsource(cls._run_rtcp):
            raise HookError(f"{cls.__name__}._run_rtcp no longer sets its started event")
    for name in (*_SENDER_LSR, _SENDER_CNAME):
        if f"self.__{name.split('__', 1)[1]}" not in sender_init:
            raise HookError(f"RTCRtpSender has no {name}")
    if "self.__lsr == report.lsr" not in inspect.getsource(RTCRtpSender._handle_rtcp_packet):
        raise HookError("RTCRtpSender no longer measures the round trip from its last sender report's lsr")
    for name in _RECEIVER_LSR:
        if f"self.__{name.split('__', 1)[1]}" not in receiver_init:
            raise HookError(f"RTCRtpReceiver has no {name}")
    stream = StreamStatistics(48000)
    for name in _STREAM_FIELDS:
        if not hasattr(stream, name):
            raise HookError(f"aiortc's StreamStatistics has no {name}")
    if list(inspect.signature(StreamStatistics.add).parameters) != ["self", "packet"]:
        raise HookError("aiortc's StreamStatistics.add is no longer add(packet)")


def _check_certificate() -> None:
    """The private parts of aiortc that SharedCertificate and new_peer_connections_use rely on."""
    if "RTCCertificate.generateCertificate()" not in inspect.getsource(RTCPeerConnection.__init__):
        raise HookError("RTCPeerConnection.__init__ no longer makes its certificate with RTCCertificate.generateCertificate")
    if not isinstance(inspect.getattr_static(RTCCertificate, "generateCertificate"), classmethod):
        raise HookError("RTCCertificate.generateCertificate is no longer a classmethod")
    if list(inspect.signature(RTCCertificate._create_ssl_context).parameters) != ["self", "srtp_profiles"]:
        raise HookError("RTCCertificate._create_ssl_context is no longer _create_ssl_context(srtp_profiles)")
    start = inspect.getsource(RTCDtlsTransport.start)
    if "SSL.Connection(\n            self.__local_certificate._create_ssl_context(" not in start:
        raise HookError("RTCDtlsTransport.start no longer builds its SSL.Connection on the certificate's context")
    if "self.__local_certificate.getFingerprints()" not in inspect.getsource(RTCDtlsTransport.getLocalParameters):
        raise HookError("RTCDtlsTransport.getLocalParameters no longer asks its certificate for the fingerprints")


def ice_connection(pc: RTCPeerConnection) -> Connection:
    """The aioice Connection of a BUNDLEd peer connection (one transport for all m-lines).

    Raises ValueError if the peer connection has no transceiver yet
    (call after setRemoteDescription).
    """
    transceivers = pc.getTransceivers()
    if not transceivers:
        raise ValueError("peer connection has no transceiver")
    return transceivers[0].receiver.transport.transport.iceGatherer._connection


def set_local_ufrag(conn: Connection, ufrag: str) -> None:
    """Make ``ufrag`` the server ICE ufrag (RFC 8445 5.3) of ``conn``.

    Rewriting the SDP alone does not work: aioice checks USERNAME against its
    own value and answers every check with 401. Must run before
    createAnswer(). Raises ValueError if ``ufrag`` is outside ICE's alphabet.
    """
    aioice.ice.validate_username(ufrag)
    conn._local_username = ufrag


def answer_as_dtls_server(pc: RTCPeerConnection) -> None:
    """Make ``pc`` answer ``a=setup:passive`` (RFC 8842 5.3) where the offer left the DTLS role to it
    (``a=setup:actpass``): it becomes the DTLS server (RFC 5763 5), whose final flight completes the
    handshake on its side first, so it is keyed before the caller's DTLS is connected and the caller's
    first packet finds it ready. aiortc answers ``active`` whenever the role is left to it and has no option
    for this. Call it only for an offer whose every m-line says ``actpass``: aiortc records an offered
    ``active`` (by taking the server role itself) but not an offered ``passive``, which this would turn into
    two servers. Must run after setRemoteDescription and before createAnswer."""
    transports = {t.receiver.transport for t in pc.getTransceivers()}
    if pc.sctp is not None:
        transports.add(pc.sctp.transport)
    for dtls in transports:
        if dtls._role == "auto":
            dtls._set_role("server")


def attach_protocol(conn: Connection, transport: Any, public: tuple[str, int]) -> StunProtocol:
    """Give ``conn`` one host candidate, ``public``, served by ``transport``.

    ``transport`` stands in for an asyncio DatagramTransport (aioice calls only
    ``sendto``, ``close`` and ``get_extra_info``; ``close`` must end in
    ``protocol.connection_lost``, or Connection.close() hangs). Marks gathering
    done so aioice binds no socket of its own. Must run after
    setRemoteDescription and before createAnswer (RFC 8445 5.1.1: the answer
    carries this candidate).
    """
    if conn._local_candidates_start:
        raise ValueError("candidates already gathered")
    protocol = StunProtocol(conn)
    protocol.connection_made(transport)
    protocol.local_candidate = Candidate(
        foundation=candidate_foundation("host", "udp", public[0]),
        component=1,
        transport="udp",
        priority=candidate_priority(1, "host"),
        host=public[0],
        port=public[1],
        type="host",
    )
    conn._protocols.append(protocol)
    conn._local_candidates.append(protocol.local_candidate)
    conn._local_candidates_start = conn._local_candidates_end = True
    return protocol


def media_receiver(protocol: StunProtocol) -> Callable[[bytes], None]:
    """Where a DTLS/SRTP datagram for ``protocol``'s session goes: its Connection's receive queue
    (``Connection.data_received(data, component)``, component 1: RTP and RTCP are multiplexed, RFC 5761),
    which aiortc's DTLS transport reads. STUN must go to ``protocol.datagram_received`` instead."""
    return partial(protocol.receiver.data_received, component=protocol.local_candidate.component)


def forget_address(protocol: StunProtocol, addr: tuple[str, int]) -> None:
    """Make ``protocol``'s Connection forget what it learned from ``addr``: the peer-reflexive remote
    candidate (RFC 8445 7.3.1.3) at that address and its check-list pairs, cancelling their checks (and
    so their retransmissions). aioice keeps both for the session's life otherwise; the mux calls this
    when it evicts a route, so aioice never holds more addresses than the mux has routes.

    Signalled candidates and the nominated pair are kept. A check received from ``addr`` before ICE
    started is discarded too.
    """
    conn = protocol.receiver
    host, port = addr
    nominated = {id(pair.remote_candidate) for pair in conn._nominated.values()}
    forgotten = [c for c in conn._remote_candidates
                 if c.type == "prflx" and c.host == host and c.port == port and id(c) not in nominated]
    for candidate in forgotten:
        conn._remote_candidates.remove(candidate)
        for pair in [p for p in conn._check_list if p.remote_candidate is candidate]:
            if pair.task is not None:
                pair.task.cancel()
            conn._check_list.remove(pair)
    early = [check for check in conn._early_checks if check[1][0] == host and check[1][1] == port]
    for check in early:
        conn._early_checks.remove(check)


def restart_ice(conn: Connection, local_ufrag: str, local_pwd: str, remote_ufrag: str, remote_pwd: str) -> None:
    """ICE restart (RFC 8445 9) of a connected ``conn``, keeping its selected pair, on the controlled side.

    The local and remote ufrag and pwd become the new ones at once: checks signed with the old
    credentials get 401 from here on (aioice holds one generation). The check list, the
    learned peer-reflexive candidates and the pairs being nominated are dropped, cancelling their
    checks; the nominated pair stays, so DTLS and SRTP keep running on the same objects until a check
    of the new generation carrying USE-CANDIDATE nominates a new pair (aioice's ``check_incoming``
    learns the caller's new address, runs the triggered check and takes the nomination). Consent
    checks (RFC 7675) continue on the nominated pair with the new credentials. aiortc never learns of
    it: its ICE transport stays ``completed``.

    Raises ValueError if ``conn`` has no nominated pair or is closing (nothing to restart: the caller
    should make a new session), or if a ufrag or pwd is outside ICE's grammar (RFC 8839 5.4).
    """
    if not conn._nominated or conn._closing:
        raise ValueError("ICE is not connected")
    aioice.ice.validate_username(local_ufrag)
    aioice.ice.validate_password(local_pwd)
    aioice.ice.validate_username(remote_ufrag)
    aioice.ice.validate_password(remote_pwd)
    for pair in conn._check_list:
        if pair.task is not None:
            pair.task.cancel()
    conn._check_list.clear()
    conn._remote_candidates.clear()
    conn._nominating.clear()
    conn._local_username, conn._local_password = local_ufrag, local_pwd
    conn.remote_username, conn.remote_password = remote_ufrag, remote_pwd


def local_candidate_sdp(protocol: StunProtocol, public: tuple[str, int]) -> str:
    """The ``a=candidate`` value (RFC 8839 5.1) for ``public`` as ``protocol``'s host candidate would be
    written in an answer (same foundation rule, component and priority), for an ICE restart's answer
    through another edge."""
    candidate = protocol.local_candidate
    return Candidate(foundation=candidate_foundation("host", "udp", public[0]), component=candidate.component,
                     transport="udp", priority=candidate.priority, host=public[0], port=public[1],
                     type="host").to_sdp()


class _Tap:
    """Stands in for the receiver's jitter buffer: hands each RTP packet on, keeps nothing."""

    __slots__ = ("on_packet",)

    def __init__(self, on_packet: Callable[[Any], None]) -> None:
        self.on_packet = on_packet

    def add(self, packet: Any) -> tuple[bool, None]:
        self.on_packet(packet)
        return False, None


def tap_receiver(receiver: RTCRtpReceiver, on_packet: Callable[[Any], None]) -> None:
    """Deliver every RTP packet ``receiver`` accepts to ``on_packet(packet)``.

    The packet has ``payload`` (bytes: one Opus packet, RFC 7587),
    ``timestamp`` (48 kHz RTP clock), ``sequence_number`` and
    ``extensions.audio_level``: ``(voice activity flag, level in -dBov)`` from
    the RFC 6464 header extension, or None if the sender does not send it. aiortc still does
    SRTP, RTCP statistics, NACK and RTX, but its jitter buffer (which waits for
    4 packets before it plays) and its decoder thread are bypassed.
    """
    if not hasattr(receiver, _JITTER_BUFFER):
        raise HookError("RTCRtpReceiver has no jitter buffer attribute")
    setattr(receiver, _JITTER_BUFFER, _Tap(on_packet))


def srtp_sessions(dtls: RTCDtlsTransport) -> tuple[pylibsrtp.Session, pylibsrtp.Session]:
    """The (inbound, outbound) pylibsrtp Sessions that ``dtls`` keyed from its handshake (RFC 5764 4.2).

    Sharing aiortc's own sessions keeps one replay window and one rollover counter per SSRC for both
    paths (SRTCP stays with aiortc). Raises HookError if DTLS has not set them up (not connected yet).
    """
    rx, tx = getattr(dtls, "_rx_srtp", None), getattr(dtls, "_tx_srtp", None)
    if not isinstance(rx, pylibsrtp.Session) or not isinstance(tx, pylibsrtp.Session):
        raise HookError("the DTLS transport has no SRTP sessions (not connected?)")
    return rx, tx


def srtp_processor(session: pylibsrtp.Session, *, protect: bool) -> Callable[[bytes], bytes]:
    """``session.protect`` (or ``unprotect``) for one packet at a time on the hot path: libsrtp's
    srtp_protect/srtp_unprotect (RFC 3711 3.3, 3.4) called straight on the session's own buffer, without the
    wrapper's checks and allocation per call. The same session object, so one replay window and rollover
    counter per SSRC; use it from the thread that owns the session (the buffer is shared). Raises
    pylibsrtp.Error as the wrapper does, and for a packet longer than the buffer takes."""
    lib, ffi = pylibsrtp.lib, pylibsrtp.ffi  # the cffi binding pylibsrtp imports
    # The session's own srtp_t pointer (freed with it, so held here) and packet buffer.
    srtp, cdata, buffer = session._srtp, session._cdata, session._buffer
    process = lib.srtp_protect if protect else lib.srtp_unprotect
    limit = len(cdata) - (pylibsrtp.SRTP_MAX_TRAILER_LEN if protect else 0)
    length = ffi.new("int *")
    errors = pylibsrtp.ERRORS

    def run(packet: bytes) -> bytes:
        size = len(packet)
        if size > limit:
            raise pylibsrtp.Error("packet is too long")
        length[0] = size
        buffer[0:size] = packet
        status = process(srtp[0], cdata, length)
        if status:
            raise pylibsrtp.Error(errors[status] if status < len(errors) else f"libsrtp error {status}")
        return buffer[0:length[0]]

    return run


def receiver_streams(receiver: RTCRtpReceiver) -> dict[int, StreamStatistics]:
    """``receiver``'s statistics per remote SSRC, from which aiortc builds its RTCP receiver reports
    (RFC 3550 6.4.2) and ``getStats``' inbound-rtp. Whoever bypasses the receiver must feed them:
    ``new_stream()`` makes one, its ``add(packet)`` takes anything with ``sequence_number`` and
    ``timestamp``."""
    streams: dict[int, StreamStatistics] = getattr(receiver, _REMOTE_STREAMS)
    return streams


def new_stream(clock_hz: int) -> StreamStatistics:
    """A fresh aiortc StreamStatistics for a remote SSRC (see receiver_streams); ``clock_hz``: the RTP clock."""
    return StreamStatistics(clock_hz)


def set_sender_report(sender: RTCRtpSender, ntp_timestamp: int, rtp_timestamp: int, packets: int,
                      octets: int) -> None:
    """What ``sender``'s next RTCP sender report (RFC 3550 6.4.1) says: the NTP time (64-bit fixed point) at
    which the RTP timestamp ``rtp_timestamp`` was sent, and packets and payload octets sent so far. For RTP
    sent around aiortc's sender, which then must send none of its own (one sequence space per SSRC)."""
    for name, value in zip(_SENDER_REPORT, (ntp_timestamp, rtp_timestamp, packets, octets), strict=True):
        setattr(sender, name, value)


def stop_rtcp(sender: RTCRtpSender, receiver: RTCRtpReceiver) -> bool:
    """Cancel the per-session RTCP tasks that ``sender`` and ``receiver`` created in ``send()`` and
    ``receive()`` (a sender report each second from one, a receiver report from the other), for a path that
    sends its own reports (core/lean.py LeanPath.tick). Only tasks that have not run yet are cancelled (their
    first step sets their started event): the sender's, once running, would answer a cancel with an RTCP BYE.
    Their started and exited events are then set, so ``stop()`` does not wait for them. Returns False,
    changing nothing, unless both tasks exist and have not run (a session that only sends or only receives,
    or whose tasks already run, keeps aiortc's reports)."""
    tasks = [(part, _RTCP_TASKS[type(part)]) for part in (sender, receiver)]
    if any(getattr(part, task) is None or getattr(part, task).done() or getattr(part, started).is_set()
           for part, (task, started, _) in tasks):
        return False
    for part, (task, started, exited) in tasks:
        getattr(part, started).set()
        getattr(part, exited).set()
        getattr(part, task).cancel()
    return True


def rtcp_cname(sender: RTCRtpSender) -> str | None:
    """The CNAME ``sender`` puts in its RTCP SDES (RFC 3550 6.5.1), or None before ``send()``."""
    cname: str | None = getattr(sender, _SENDER_CNAME)
    return cname


def set_last_sender_report(sender: RTCRtpSender, lsr: int, sent_at: float) -> None:
    """Tell ``sender`` that a sender report with middle NTP bits ``lsr`` went out at ``sent_at`` (unix
    seconds): the receiver reports that answer it then give the round trip (RFC 3550 6.4.1, getStats'
    roundTripTime)."""
    for name, value in zip(_SENDER_LSR, (lsr, sent_at), strict=True):
        setattr(sender, name, value)


def last_sender_reports(receiver: RTCRtpReceiver) -> tuple[dict[int, int], dict[int, float]]:
    """The middle NTP bits of the last sender report from each remote SSRC and when it came (unix seconds),
    which ``receiver`` keeps up to date: the LSR and DLSR of a receiver report (RFC 3550 6.4.1)."""
    lsr: dict[int, int] = getattr(receiver, _RECEIVER_LSR[0])
    lsr_time: dict[int, float] = getattr(receiver, _RECEIVER_LSR[1])
    return lsr, lsr_time


def receive_without_decoder(receiver: RTCRtpReceiver) -> None:
    """Make ``receiver`` start (``receive()``, which aiortc calls right after DTLS connects) without the decoder
    thread aiortc starts for every receiver: with the jitter buffer tapped (tap_receiver) or bypassed (the lean
    path) it would never get a frame, yet starting it and stopping it again cost the event loop a thread's
    creation and two hand-overs of the GIL in the middle of the call's set-up. Everything else ``receive()``
    does is kept: the codecs and RTX SSRCs, the registration with the DTLS transport's RTP router, the RTCP
    task (stop_rtcp takes it over). The receiver's remote track then never gets a frame. Call before the
    session connects."""

    async def receive(parameters: Any) -> None:
        started, codecs, rtx_ssrc, rtcp_task = _RECEIVER_START
        if getattr(receiver, started):
            return
        for codec in parameters.codecs:
            getattr(receiver, codecs)[codec.payloadType] = codec
        for encoding in parameters.encodings:
            if encoding.rtx:
                getattr(receiver, rtx_ssrc)[encoding.rtx.ssrc] = encoding.ssrc
        receiver.transport._register_rtp_receiver(receiver, parameters)
        setattr(receiver, rtcp_task, asyncio.ensure_future(receiver._run_rtcp()))
        setattr(receiver, started, True)

    receiver.receive = receive  # type: ignore[method-assign]


class SharedCertificate(RTCCertificate):
    """A DTLS certificate (aiortc's: ECDSA P-256, self-signed, valid 30 days from its making) for many peer
    connections of one process, as Janus uses one: DTLS-SRTP binds a certificate to a session by the
    fingerprint in the SDP (RFC 5763 5, RFC 8122 5), which each side still checks after the handshake, and the
    key only signs the ephemeral ECDHE exchange, so each session keeps keys of its own. What aiortc otherwise
    makes for every peer connection is made once: the key and certificate, their fingerprints (three digests)
    and the DTLS context (one per list of SRTP profiles). The context has OpenSSL's session cache off, as
    aiortc's single-use contexts in effect have: no session of one call can be resumed by another. Make one
    with ``SharedCertificate.generateCertificate()``; pair it with new_peer_connections_use."""

    def __init__(self, key: Any, cert: Any) -> None:
        super().__init__(key=key, cert=cert)
        self._fingerprints = super().getFingerprints()
        self._contexts: dict[tuple[bytes, ...], SSL.Context] = {}

    def getFingerprints(self) -> list[RTCDtlsFingerprint]:
        """The certificate's fingerprints (RFC 8122 5), computed once."""
        return list(self._fingerprints)

    def _create_ssl_context(self, srtp_profiles: list[SRTPProtectionProfile]) -> SSL.Context:
        """aiortc's DTLS context for ``srtp_profiles``, made once per list and shared by every connection."""
        key = tuple(profile.openssl_profile for profile in srtp_profiles)
        context = self._contexts.get(key)
        if context is None:
            context = super()._create_ssl_context(srtp_profiles)
            context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
            self._contexts[key] = context
        return context


_CERTIFICATE: contextvars.ContextVar[RTCCertificate | None] = contextvars.ContextVar(
    "voicemesh_certificate", default=None)
_wrapped_generate: classmethod = inspect.getattr_static(RTCCertificate, "generateCertificate")


def _generate_certificate(cls: type[RTCCertificate]) -> RTCCertificate:
    """Stand-in for ``RTCCertificate.generateCertificate``: the certificate of the new_peer_connections_use
    block this runs in, else a fresh one as the wrapped method makes it."""
    certificate = _CERTIFICATE.get()
    if certificate is not None and cls is RTCCertificate:
        return certificate
    made: RTCCertificate = _wrapped_generate.__func__(cls)
    return made


@contextlib.contextmanager
def new_peer_connections_use(certificate: RTCCertificate) -> Iterator[None]:
    """Make every RTCPeerConnection constructed inside this block use ``certificate`` for DTLS instead of
    making one of its own (see SharedCertificate).

    ``RTCPeerConnection.__init__`` calls ``RTCCertificate.generateCertificate()`` and has no option to take
    one. A stand-in is installed in its place once per process (wrapping whatever is there) and answers
    ``certificate`` only inside this block's context, so other peer connections in the process (a test's
    callers) still make their own."""
    global _wrapped_generate
    installed = inspect.getattr_static(RTCCertificate, "generateCertificate")
    if getattr(installed, "__func__", None) is not _generate_certificate:
        _wrapped_generate = installed
        RTCCertificate.generateCertificate = classmethod(_generate_certificate)  # type: ignore[method-assign,assignment]
    token = _CERTIFICATE.set(certificate)
    try:
        yield
    finally:
        _CERTIFICATE.reset(token)


_GATHER_ON: contextvars.ContextVar[str | None] = contextvars.ContextVar("voicemesh_gather_on", default=None)
_wrapped_host_addresses: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """Stand-in for ``aioice.ice.get_host_addresses``: the address of the gather_on() block this
    gathering runs in, else what the wrapped function says."""
    host = _GATHER_ON.get()
    if host is not None:
        return [host]
    return _wrapped_host_addresses(use_ipv4, use_ipv6)


@contextlib.contextmanager
def gather_on(host: str | None) -> Iterator[None]:
    """Make ICE gathering started inside this block use only the local address ``host`` (an IP
    address; None changes nothing).

    ``Connection.gather_candidates`` calls the module-level ``aioice.ice.get_host_addresses``, which
    has no option to pick an address and always skips 127.0.0.1. A stand-in is installed in its
    place, once per process (wrapping whatever is there, so another patch in the same process keeps
    working), and answers ``[host]`` only for gathering done in this context: aiortc gathers in
    tasks created inside ``setLocalDescription``, which inherit the context, so concurrent calls and
    other peer connections are unaffected.
    """
    if host is None:
        yield
        return
    global _wrapped_host_addresses
    if aioice.ice.get_host_addresses is not _host_addresses:
        _wrapped_host_addresses = aioice.ice.get_host_addresses
        aioice.ice.get_host_addresses = _host_addresses
    token = _GATHER_ON.set(host)
    try:
        yield
    finally:
        _GATHER_ON.reset(token)
