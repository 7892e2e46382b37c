"""The voicemesh test client: places one real WHIP call (RFC 9725) with aiortc,
speaks a WAV clip into it, records the echo that comes back and measures the
call (setup milestones, audio round trip, RTP counters).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from collections.abc import Coroutine
from fractions import Fraction
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import (
    InvalidAccessError,
    InvalidStateError,
    MediaStreamError,
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from yarl import URL

from voicemesh.app import audio
from voicemesh.core import hooks
from voicemesh.core.media import OpusDecoder
from voicemesh.runtime.tasks import spawn

logger = logging.getLogger("voicemesh.client")

RATE = 48000
"""Sample rate of the sent and received audio, Hz (Opus runs at 48 kHz)."""

FRAME_SAMPLES = 960
"""Samples per 20 ms audio frame at ``RATE``."""

TAIL_S = 1.0
"""Silence sent after the clip, seconds, so the echo's tail is captured."""

AUDIO_RMS_THRESHOLD = 100.0
"""RMS (int16 scale, about -50 dBFS) above which a received frame counts as
audio for the ``first_audio`` milestone."""

CORRELATION_OK = 0.5
"""Lowest envelope correlation (``audio.estimate_delay_ms``) between sent and
received audio for a call to count as ok. Measured: the clip echoed back by an
aiortc peer through Opus scores 0.96-0.98, also with four calls at once;
unrelated noise stays below 0.1, other speech 0.13, the same sentence in
another voice 0.24, the clip played backwards 0.25."""


SILENCE_S = 1.5
"""With re-dialling on, seconds without any packet from the far end (RTP, RTCP or STUN: the transport's
packetsReceived) after which the call counts as lost. A live transceiver sends RTCP at least every 1.25 s
(its lean path: within 0.75 s of the last packet, on a 0.5 s tick; aiortc's: 0.5 to 1.5 s apart) even while
its agent is quiet, and consent checks every few seconds."""

MAX_REDIALS = 3
"""Re-dials one call may make before it gives up."""

STATS_POLL_S = 0.1
"""How often the silence watch reads getStats, seconds."""


@dataclasses.dataclass
class CallReport:
    """What one call did.

    ``session_url`` is the WHIP session URL (``Location`` resolved against the
    POST URL) and ``session_id`` its last path segment; both are ``""`` if no
    session was created (after a re-dial: the last session). ``dns_ms`` is how long resolving the WHIP URL's
    host took (None for an address), done before the offer is made, as a browser on a page of that host or a
    resolver's cache has done it. ``setup_ms`` holds the milestones reached, in ms
    from ``createOffer()``: ``offer`` (local description set: the offer is ready to send), ``dns`` (the POST's
    host lookup done: the one made before the offer, from memory), ``connection`` (the TCP connection for the
    POST opened; absent if a kept-alive one was used), ``answer`` (201 received), ``ice_connected``
    (iceConnectionState connected or completed), ``dtls_connected``
    (connectionState connected) and ``first_audio`` (first received frame
    whose RMS exceeds ``AUDIO_RMS_THRESHOLD``). ``audio_rtt_ms`` is the typical
    delay from handing the clip to aiortc to its echo arriving off the wire
    (decoded on arrival: Opus and the whole path, not the caller's jitter
    buffer), in ms, None unless the echo correlates (``correlation >= CORRELATION_OK``).
    ``jitter_ms`` is inbound-rtp jitter. Packet counts come from getStats:
    outbound-rtp packetsSent, inbound-rtp packetsReceived and packetsLost
    (clamped to >= 0), summed over every leg of a re-dialled call. ``ok`` means audio went both ways:
    packets came back and they carry the clip (``correlation >= CORRELATION_OK``).
    ``redials`` has one entry per re-dial (``call(redial=True)``): ``reason`` (``"silence"``,
    ``"ice_failed"``, ``"dtls_failed"``, or the failure of the previous re-dial), ``at_ms`` (from the
    first ``createOffer()``), ``setup_ms`` of the new leg (from its own offer) and ``resumed_ms``, from
    the decision to re-dial to the new leg's first packet of echo (None if none came).
    """

    ok: bool
    session_url: str
    session_id: str
    setup_ms: dict[str, float]
    audio_rtt_ms: float | None
    correlation: float | None
    jitter_ms: float | None
    packets_sent: int
    packets_received: int
    packets_lost: int
    error: str | None = None
    redials: list[dict] = dataclasses.field(default_factory=list)
    dns_ms: float | None = None

    def to_dict(self) -> dict:
        """The report as a JSON-ready dict with the field names as keys."""
        return dataclasses.asdict(self)


class CallError(Exception):
    """A call that could not go on; ``reason`` is a short counter label
    (``"dns"``, ``"http_connect"``, ``"http_status"``, ``"no_location"``,
    ``"ice_failed"``, ``"dtls_failed"``, ``"silence"``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def call(
    url: str,
    wav: str,
    *,
    out: str | None = None,
    duration_s: float | None = None,
    bind: str | None = None,
    timeout_s: float = 15.0,
    headers: dict[str, str] | None = None,
    redial: bool = False,
    silence_s: float = SILENCE_S,
    max_redials: int = MAX_REDIALS,
) -> CallReport:
    """Place one WHIP call to ``url``, speak ``wav`` into it and measure the echo.

    Signaling follows RFC 9725 §4.2, non-trickle: the offer goes out after
    ICE gathering completed, ``POST url`` with ``Content-Type:
    application/sdp`` must answer ``201 Created`` with the SDP answer and a
    ``Location``; the call ends with ``DELETE`` on that session URL. Errors
    in RFC 9457 problem details have their title and detail quoted in
    ``CallReport.error``. ``headers`` are added to both requests (for
    example ``Authorization``). ICE uses no STUN or TURN server.

    The clip (any format ``audio.load_wav_mono`` reads) is sent once in real
    time as 20 ms Opus frames, followed by ``TAIL_S`` of silence, or more
    silence up to ``duration_s`` seconds in all. ``bind`` (an IP address)
    makes ICE gather its host candidate on that address only; it also allows
    127.0.0.1, which aioice otherwise skips. ``timeout_s`` bounds setup, from
    the offer to DTLS connected, and how late the media may start. ``out``,
    if given, receives the audio that came back as a 48 kHz mono WAV on the
    sent clip's timeline (sample 0 = the clip's start). Each direction is
    laid out by its media timestamps at its median handover or arrival time
    (``audio.anchor_media_time``), so ``audio_rtt_ms`` is the typical delay.

    ``redial``: once connected, a call that hears nothing from the far end for ``silence_s`` seconds (its
    transceiver died) or whose ICE or DTLS fails hangs that leg up (``DELETE``, not waited for) and posts a
    new offer to ``url`` (the geo name: the edge picks a live transceiver), with the same ``headers``: an
    API key or open WHIP works again, a client token (good for one session) does not. The clip goes on
    where the clock is; what fell in the gap is not sent. At most ``max_redials`` times.

    Returns a ``CallReport``; HTTP errors, timeouts and ICE or DTLS failures
    give ``ok=False`` with ``error`` set rather than an exception. Raises
    ``FileNotFoundError`` or ``audio.BadAudio`` if ``wav`` cannot be read.
    """
    clip = audio.load_wav_mono(wav, RATE)
    total = max(len(clip) + round(TAIL_S * RATE), round((duration_s or 0.0) * RATE))
    speech = _Speech(np.concatenate([clip, np.zeros(total - len(clip), dtype=np.int16)]))
    legs: list[_Leg] = []
    redials: list[dict] = []
    hangups: set[asyncio.Task] = set()
    error: str | None = None
    t0 = time.monotonic()
    resolver = _AheadResolver()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s),
                                     connector=aiohttp.TCPConnector(resolver=resolver),
                                     trace_configs=[_connection_milestone()]) as http:
        while True:
            leg = _Leg(speech, bind)
            legs.append(leg)
            try:
                await leg.connect(http, resolver, url, headers or {}, timeout_s)
                async with asyncio.timeout(speech.remaining_s() + timeout_s):
                    await leg.media(silence_s if redial else None)
                break
            except TimeoutError:
                error = f"timeout: {leg.progress.waiting_for()} not reached in time (timeout_s={timeout_s:g})"
                reason = "timeout"
            except CallError as exc:
                error, reason = str(exc), exc.reason
            except (ValueError, InvalidAccessError, InvalidStateError) as exc:
                error, reason = str(exc), "error"
            finally:
                ending = error is None or not redial or len(redials) >= max_redials or speech.finished.is_set()
                await leg.hang_up(http, headers or {}, hangups, wait=ending)
            if ending:
                break
            logger.warning("re-dialling %s: %s", url, error)
            redials.append({"reason": reason, "at_ms": round((time.monotonic() - t0) * 1000, 1), "_at": time.monotonic()})
            error = None
        if hangups:
            await asyncio.wait(hangups)
    for entry, leg in zip(redials, legs[1:], strict=False):
        at = entry.pop("_at")
        first = leg.recorder.frames[0][0] if leg.recorder.frames else None
        entry.update(setup_ms=leg.progress.setup_ms, resumed_ms=None if first is None else round((first - at) * 1000, 1))
    heard = [chunk for leg in legs for chunk in audio.anchor_media_time(leg.recorder.frames)]
    rtt_ms, correlation = _measure(speech.sent, heard, out)
    sent, received, lost = (sum(getattr(leg, name) for leg in legs) for name in ("sent", "received", "lost"))
    ok = error is None and received > 0 and correlation is not None and correlation >= CORRELATION_OK
    if error is None and not ok:
        error = _no_echo(received, correlation)
    last = legs[-1]
    return CallReport(
        ok=ok,
        session_url=last.session_url,
        session_id=URL(last.session_url).name if last.session_url else "",
        setup_ms=legs[0].progress.setup_ms,
        audio_rtt_ms=rtt_ms,
        correlation=correlation,
        jitter_ms=last.jitter_ms,
        packets_sent=sent,
        packets_received=received,
        packets_lost=lost,
        error=error,
        redials=redials,
        dns_ms=legs[0].dns_ms,
    )


class _Leg:
    """One peer connection and WHIP session of a call (a re-dialled call has several, one after another)."""

    def __init__(self, speech: _Speech, bind: str | None) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.bind = bind
        transceiver = self.pc.addTransceiver(_SpeechTrack(speech), direction="sendrecv")
        opus = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == "audio/opus"]
        transceiver.setCodecPreferences(opus)
        self.speech = speech
        self.recorder = _EchoRecorder()
        hooks.tap_receiver(transceiver.receiver, self.recorder.on_packet)
        self.progress = _Progress(self.pc, self.recorder)
        self.session_url = ""
        self.dns_ms: float | None = None
        self.sent = self.received = self.lost = 0
        self.jitter_ms: float | None = None

    async def connect(self, http: aiohttp.ClientSession, resolver: _AheadResolver, url: str, headers: dict[str, str],
                      timeout_s: float) -> None:
        """Resolve the host, then offer, answer, until DTLS connected; raises TimeoutError, CallError, ValueError."""
        async with asyncio.timeout(timeout_s):
            self.dns_ms = await resolver.ahead(URL(url))
            self.progress.start()
            offer = await self.pc.createOffer()
            with hooks.gather_on(self.bind):
                await self.pc.setLocalDescription(offer)
            self.progress.mark("offer")
            answer, self.session_url = await _post_offer(http, url, self.pc.localDescription.sdp, headers,
                                                         self.progress)
            self.progress.mark("answer")
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            await self.progress.until(self.progress.connected.wait())

    async def media(self, silence_s: float | None) -> None:
        """Until the clip has been sent. Raises the CallError of a failed connection, and with
        ``silence_s`` CallError "silence" when nothing came from the far end for that long."""
        if silence_s is None:
            await self.progress.until(self.speech.finished.wait())
            return
        loop = asyncio.get_running_loop()
        heard, heard_at = -1, loop.time()
        while not self.speech.finished.is_set():
            self.progress.raise_failure()
            packets = sum(s.packetsReceived for s in (await self.pc.getStats()).values() if s.type == "transport")
            if packets != heard:
                heard, heard_at = packets, loop.time()
            elif loop.time() - heard_at >= silence_s:
                raise CallError("silence", f"nothing came back for {silence_s:g} s: the far end is gone")
            try:
                await asyncio.wait_for(self.speech.finished.wait(), STATS_POLL_S)
            except TimeoutError:
                pass

    async def hang_up(self, http: aiohttp.ClientSession, headers: dict[str, str], hangups: set[asyncio.Task], *,
                      wait: bool) -> None:
        """Read the RTP counts, DELETE the session, and close the peer connection. With ``wait`` (the call's
        end) the DELETE is answered before the peer connection closes, so the session ends as deleted (RFC
        9725 4.2); a leg left for a re-dial does not wait for it (its transceiver may be dead): the DELETE
        runs in a task kept in ``hangups``."""
        self.sent, self.received, self.lost, self.jitter_ms = await _rtp_counts(self.pc)
        if self.session_url and wait:
            await _delete_session(http, self.session_url, headers)
        elif self.session_url:
            spawn(_delete_session(http, self.session_url, headers), "call hangs up", hangups)
        await self.pc.close()


def format_report(report: CallReport) -> str:
    """A short multi-line, human-readable rendering of a ``CallReport``."""
    names = {"answer": "answer", "ice_connected": "ICE", "dtls_connected": "DTLS", "first_audio": "first audio"}
    setup = ", ".join(f"{names.get(k, k)} {v:.1f} ms" for k, v in report.setup_ms.items()) or "-"
    lines = [
        f"call     {'OK' if report.ok else 'FAILED'}  session {report.session_id or '-'} {report.session_url}".rstrip(),
        f"setup    {setup}",
        f"audio    rtt {_fmt(report.audio_rtt_ms, '.0f', ' ms')}, correlation {_fmt(report.correlation, '.2f')}, "
        f"jitter {_fmt(report.jitter_ms, '.1f', ' ms')}",
        f"packets  sent {report.packets_sent}, received {report.packets_received}, lost {report.packets_lost}",
    ]
    for redial in report.redials:
        lines.append(f"redial   at {redial['at_ms']:.0f} ms ({redial['reason']}), echo again after "
                     f"{_fmt(redial['resumed_ms'], '.0f', ' ms')}")
    if report.error:
        lines.append(f"error    {report.error}")
    return "\n".join(lines)


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def _no_echo(received: int, correlation: float | None) -> str:
    if received == 0:
        return "no audio came back (0 RTP packets received)"
    measured = _fmt(correlation, ".2f")
    return f"the audio that came back is not the clip (correlation {measured} < {CORRELATION_OK})"


class _Speech:
    """The samples a call speaks, on one absolute real-time schedule shared by every leg: frame ``i`` is due
    ``i`` * 20 ms after the first frame was handed over. ``sent`` records each frame handed over as
    ``(time.monotonic(), media time s, samples)``; ``finished`` is set once the last frame is due."""

    def __init__(self, samples: np.ndarray) -> None:
        padded = np.concatenate([samples, np.zeros(-len(samples) % FRAME_SAMPLES, dtype=np.int16)])
        self.frames = padded.reshape(-1, FRAME_SAMPLES)
        self.start: float | None = None
        self.sent: list[tuple[float, float, np.ndarray]] = []
        self.finished = asyncio.Event()

    def due(self) -> int:
        """The index of the frame due now (0 before the first was handed over)."""
        if self.start is None:
            return 0
        return int((time.monotonic() - self.start) * RATE / FRAME_SAMPLES)

    def remaining_s(self) -> float:
        """Seconds until the last frame is due (all of them before the first was handed over)."""
        return max(0.0, (len(self.frames) - self.due()) * FRAME_SAMPLES / RATE)


class _SpeechTrack(MediaStreamTrack):
    """One leg's audio track: hands aiortc 20 ms s16 mono frames of ``speech`` as they fall due, from the
    frame due when the leg's sender first asks, then ends."""

    kind = "audio"

    def __init__(self, speech: _Speech) -> None:
        super().__init__()
        self._speech = speech
        self._next: int | None = None

    async def recv(self) -> av.AudioFrame:
        speech = self._speech
        if speech.start is None:
            speech.start = time.monotonic()
        index = speech.due() if self._next is None else self._next
        self._next = index + 1
        await asyncio.sleep(max(0.0, speech.start + index * FRAME_SAMPLES / RATE - time.monotonic()))
        if index >= len(speech.frames):
            speech.finished.set()
            self.stop()
            raise MediaStreamError
        samples = speech.frames[index]
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = index * FRAME_SAMPLES
        frame.time_base = Fraction(1, RATE)
        speech.sent.append((time.monotonic(), index * FRAME_SAMPLES / RATE, samples))
        return frame


class _EchoRecorder:
    """Records the echo as it comes off the wire: ``on_packet`` (a receiver tap,
    core/hooks.py) decodes each RTP packet at once, with no jitter buffer, so
    the audio round trip measures the path and not aiortc's receive buffer
    (which waits for 4 packets, and after a loss stalls until 16 are queued).
    ``frames`` records ``(time.monotonic() on arrival, media time s from the
    RTP timestamp, 48 kHz mono samples)``."""

    def __init__(self) -> None:
        self._decoder = OpusDecoder(RATE)
        self._first_timestamp: int | None = None
        self.frames: list[tuple[float, float, np.ndarray]] = []
        self.first_audio: float | None = None

    def on_packet(self, packet) -> None:
        now = time.monotonic()
        if self._first_timestamp is None:
            self._first_timestamp = packet.timestamp
        delta = (packet.timestamp - self._first_timestamp) % 2**32
        if delta >= 2**31:  # a packet reordered before the first one
            delta -= 2**32
        samples = np.frombuffer(self._decoder.decode(packet.payload), dtype="<i2")
        if not samples.size:
            return
        self.frames.append((now, delta / RATE, samples))
        if self.first_audio is None and np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > AUDIO_RMS_THRESHOLD:
            self.first_audio = now


class _Progress:
    """Follows the peer connection's state changes: setup milestones and a
    failure that ends the call."""

    def __init__(self, pc: RTCPeerConnection, recorder: _EchoRecorder) -> None:
        self._pc = pc
        self._recorder = recorder
        self._t0 = 0.0
        self._milestones: dict[str, float] = {}
        self._failure: asyncio.Future[CallError] = asyncio.get_running_loop().create_future()
        self.connected = asyncio.Event()
        pc.on("iceconnectionstatechange", self._ice_changed)
        pc.on("connectionstatechange", self._connection_changed)

    def start(self) -> None:
        self._t0 = time.monotonic()

    def mark(self, milestone: str, at: float | None = None) -> None:
        if milestone not in self._milestones:
            self._milestones[milestone] = ((time.monotonic() if at is None else at) - self._t0) * 1000.0
            logger.debug("%s after %.1f ms", milestone, self._milestones[milestone])

    @property
    def setup_ms(self) -> dict[str, float]:
        if self._recorder.first_audio is not None:
            self.mark("first_audio", self._recorder.first_audio)
        return dict(self._milestones)

    def waiting_for(self) -> str:
        labels = {"answer": "WHIP answer", "ice_connected": "ICE connected", "dtls_connected": "DTLS connected"}
        for milestone, label in labels.items():
            if milestone not in self._milestones:
                return label
        return "end of the sent audio"

    async def until(self, done: Coroutine[Any, Any, Any]) -> None:
        """Wait for ``done``; raise the ``CallError`` if the connection fails first."""
        waiting = spawn(done, f"call waits for {self.waiting_for()}")
        await asyncio.wait([waiting, self._failure], return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            waiting.cancel()
            raise self._failure.result()

    def raise_failure(self) -> None:
        """Raise the CallError if the connection has failed."""
        if self._failure.done():
            raise self._failure.result()

    def _fail(self, error: CallError) -> None:
        if not self._failure.done():
            self._failure.set_result(error)

    def _ice_changed(self) -> None:
        state = self._pc.iceConnectionState
        if state in ("connected", "completed"):
            self.mark("ice_connected")
        elif state == "failed" and "dtls_connected" in self._milestones:
            self._fail(CallError("ice_failed", "ICE failed during the call: consent to send lost (RFC 7675)"))
        elif state == "failed":
            self._fail(CallError("ice_failed", "ICE failed: no candidate pair worked"))

    def _connection_changed(self) -> None:
        state = self._pc.connectionState
        if state == "connected":
            self.mark("dtls_connected")
            self.connected.set()
        elif state == "failed" and self._pc.iceConnectionState != "failed":
            self._fail(CallError("dtls_failed", "DTLS failed after ICE connected"))


class _AheadResolver(aiohttp.abc.AbstractResolver):
    """aiohttp's default resolver (getaddrinfo in a thread), and names resolved ahead of the offer kept for
    the rest of the call, so the WHIP answer's time does not include a DNS lookup."""

    def __init__(self) -> None:
        self._inner = aiohttp.DefaultResolver()
        self._known: dict[tuple[str, int], list] = {}

    async def ahead(self, url: URL) -> float | None:
        """Resolve ``url``'s host now, for the connections of this call; the ms it took, or None for an IP
        address. Raises CallError("dns") if it does not resolve."""
        host, port = url.raw_host or "", url.port or 0
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
            return None
        except OSError:
            pass
        started = time.monotonic()
        try:
            self._known[(host, port)] = await self._inner.resolve(host, port, family=socket.AF_UNSPEC)
        except OSError as exc:
            raise CallError("dns", f"{host} does not resolve: {exc}") from exc
        return round((time.monotonic() - started) * 1000, 1)

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list:
        known = self._known.get((host, port))
        return known if known is not None else await self._inner.resolve(host, port, family)

    async def close(self) -> None:
        await self._inner.close()


def _connection_milestone() -> aiohttp.TraceConfig:
    """Marks ``dns`` (the host looked up) and ``connection`` (a new connection opened, not a kept-alive one
    reused) on the _Progress given as a request's ``trace_request_ctx``."""
    config = aiohttp.TraceConfig()

    async def created(_session: aiohttp.ClientSession, context: Any, _params: Any) -> None:
        if isinstance(context.trace_request_ctx, _Progress):
            context.trace_request_ctx.mark("connection")

    async def resolved(_session: aiohttp.ClientSession, context: Any, _params: Any) -> None:
        if isinstance(context.trace_request_ctx, _Progress):
            context.trace_request_ctx.mark("dns")

    config.on_connection_create_end.append(created)
    config.on_dns_resolvehost_end.append(resolved)
    return config


async def _post_offer(
    http: aiohttp.ClientSession, url: str, offer: str, headers: dict[str, str], progress: _Progress | None = None
) -> tuple[str, str]:
    """POST the offer (RFC 9725 §4.2); return ``(answer SDP, session URL)``. ``progress`` is marked with
    ``connection`` when a new connection is opened for it.

    Raises ``CallError`` if the request fails, for a status other than 201
    (quoting RFC 9457 problem details) or a missing ``Location``.
    """
    try:
        async with http.post(url, data=offer, headers={**headers, "Content-Type": "application/sdp"},
                             trace_request_ctx=progress) as resp:
            body = await resp.text()
            if resp.status != 201:
                problem = await _problem(resp)
                raise CallError("http_status", f"WHIP POST {url} -> {resp.status} {resp.reason}{problem}")
            location = resp.headers.get("Location")
            if not location:
                raise CallError("no_location", f"WHIP POST {url} -> 201 without a Location header")
            return body, str(resp.url.join(URL(location)))
    except aiohttp.ClientError as exc:
        raise CallError("http_connect", f"WHIP POST {url} failed: {exc}") from exc


async def _problem(resp: aiohttp.ClientResponse) -> str:
    """The title and detail of an RFC 9457 problem details body, and any
    Retry-After, as a suffix for an error message ("" if none)."""
    parts = []
    if resp.content_type == "application/problem+json":
        try:
            problem = await resp.json(content_type=None)
        except ValueError:
            problem = None
        if isinstance(problem, dict):
            parts += [str(problem[k]) for k in ("title", "detail") if problem.get(k)]
    if "Retry-After" in resp.headers:
        parts.append(f"retry after {resp.headers['Retry-After']} s")
    return "".join(f": {p}" for p in parts)


async def _delete_session(http: aiohttp.ClientSession, session_url: str, headers: dict[str, str]) -> None:
    """End the WHIP session (RFC 9725 §4.2); failures are logged, not raised."""
    try:
        async with http.delete(session_url, headers=headers) as resp:
            if resp.status >= 300:
                logger.warning("DELETE %s -> %s %s%s", session_url, resp.status, resp.reason, await _problem(resp))
    except (aiohttp.ClientError, TimeoutError) as exc:
        logger.warning("DELETE %s failed: %r", session_url, exc)


async def _rtp_counts(pc: RTCPeerConnection) -> tuple[int, int, int, float | None]:
    """``(packets sent, packets received, packets lost >= 0, jitter ms or None)``
    from getStats (outbound-rtp and inbound-rtp; aiortc reports jitter in RTP
    timestamp units, 48 kHz for Opus)."""
    sent = received = lost = 0
    jitter_ms = None
    for stats in (await pc.getStats()).values():
        if stats.type == "outbound-rtp":
            sent += stats.packetsSent
        elif stats.type == "inbound-rtp":
            received += stats.packetsReceived
            lost += max(0, stats.packetsLost)
            jitter_ms = stats.jitter * 1000.0 / RATE
    return sent, received, lost, jitter_ms


def _measure(
    sent: list[tuple[float, float, np.ndarray]], received: list[tuple[float, np.ndarray]], out: str | None
) -> tuple[float | None, float | None]:
    """Put both directions on one timeline (the sent stream at its median handover time, see
    ``audio.anchor_media_time``; ``received`` is each leg's echo anchored the same way), write the
    received one to ``out``, and return ``(delay ms, correlation)``: no delay
    unless the correlation reaches ``CORRELATION_OK``, neither without audio."""
    if not sent:
        return None, None
    spoken = audio.anchor_media_time(sent)
    start = spoken[0][0]
    heard = audio.place_on_timeline(received, start, RATE)
    if out is not None:
        audio.write_wav(out, heard, RATE)
    if len(heard) < RATE // 1000:
        return None, None
    delay_ms, correlation = audio.estimate_delay_ms(audio.place_on_timeline(spoken, start, RATE), heard, RATE)
    return (delay_ms if correlation >= CORRELATION_OK else None), correlation
