"""Load client for bench/transceiver.py: N concurrent calls from one process, measured in a window.

A call is set up over WHIP (``--url``, the voicemesh edge) or over Janus' HTTP API (``--janus``, an
EchoTest session: create, attach ``janus.plugin.echotest``, a message with the offer, trickle completed,
then a long poll for the answer), so both servers see the same sessions. Each call sends pre-encoded
20 ms Opus packets (the bundled speech, encoded once at 32 kbit/s mono, each call from a random offset)
as ``av.Packet``s, fullband, or wideband when the answer's Opus ``maxplaybackrate`` is 16000 Hz or less
(RFC 7587 6.1, as the transceiver answers in PCM16 mode), as a browser's encoder then sends, on an
absolute 50 packets/s schedule, so the client never encodes, and counts the echoed RTP packets through
``core.hooks.tap_receiver`` without a jitter buffer or decoder. ICE gathers on ``--bind`` (127.0.0.1)
only. After every call is connected and a settle time has passed, it reads the CPU time of the given
processes and the packets sent over a window, then halts the senders and counts the echoes until they
stop, prints one JSON object (the fields of ``Window``) as its last line and hangs up.

Run it as ``python bench/load_client.py --url WHIP --n N --pid trx=PID ...`` or
``... --janus http://127.0.0.1:8088/janus --bind 10.77.0.2 ...`` (inside Janus' network namespace).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import time
from dataclasses import dataclass, field
from fractions import Fraction

import aiohttp
import av
import opuslib_next
import uvloop
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription, sdp
from yarl import URL

from voicemesh.app import audio
from voicemesh.app.demo import bundled_speech
from voicemesh.core import hooks
from voicemesh.core.media import RTP_CLOCK_HZ, SAMPLES_PER_FRAME

FRAME_S = 0.02
LATE_IAT_S = 0.06
"""An echoed packet arriving more than this (s) after the previous one counts as late."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOOPBACK = "127.0.0.1"


WIDEBAND_PLAYBACK_HZ = 16_000
"""An answer's ``maxplaybackrate`` at or below this caps the load at wideband, as Chromium caps its encoder
(OPUS_SET_MAX_BANDWIDTH: 16000 Hz or less gives wideband)."""


def encode_speech(bitrate: int = 32_000, max_bandwidth: int = opuslib_next.BANDWIDTH_FULLBAND) -> list[bytes]:
    """The bundled speech as 20 ms Opus packets (48 kHz mono, ``bitrate`` bit/s, libopus' VoIP application:
    what browsers send; complexity 4, as the load always was), coded up to ``max_bandwidth``
    (an OPUS_BANDWIDTH_*: fullband is SILK+CELT hybrid at this bitrate, wideband SILK alone)."""
    encoder = opuslib_next.Encoder(RTP_CLOCK_HZ, 1, opuslib_next.APPLICATION_VOIP)
    encoder.bitrate, encoder.complexity, encoder.max_bandwidth = bitrate, 4, max_bandwidth
    pcm = audio.load_wav_mono(bundled_speech(), RTP_CLOCK_HZ).tobytes()
    frame = SAMPLES_PER_FRAME * 2
    return [encoder.encode(pcm[at:at + frame], SAMPLES_PER_FRAME) for at in range(0, len(pcm) - frame + 1, frame)]


def max_playback_rate(answer: str) -> int | None:
    """The ``maxplaybackrate`` (Hz) an SDP answer sets on its first audio m-line's Opus, or None."""
    audio = next((m for m in sdp.SessionDescription.parse(answer).media if m.kind == "audio"), None)
    opus = next((c for c in audio.rtp.codecs if c.mimeType.lower() == "audio/opus"), None) if audio else None
    rate = opus.parameters.get("maxplaybackrate") if opus else None
    return int(rate) if rate is not None else None


class PacketTrack(MediaStreamTrack):
    """Plays ``packets`` in a loop from ``offset``, one every 20 ms on an absolute schedule, until ``halt()``;
    counts ``sent``."""

    kind = "audio"

    def __init__(self, packets: list[bytes], offset: int) -> None:
        super().__init__()
        self.packets = packets
        """What it plays; the caller may swap it for the same speech coded otherwise (same length)."""
        self._offset = offset
        self._start: float | None = None
        self._halted = asyncio.Event()
        self.sent = 0

    def halt(self) -> None:
        """Send nothing more (the call stays up)."""
        self._halted.set()

    async def recv(self) -> av.Packet:
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(self._start + self.sent * FRAME_S - time.monotonic())
        if self._halted.is_set():
            await asyncio.Future()
        packet = av.Packet(self.packets[(self._offset + self.sent) % len(self.packets)])
        packet.pts = self.sent * SAMPLES_PER_FRAME
        packet.time_base = Fraction(1, RTP_CLOCK_HZ)
        self.sent += 1
        return packet


@dataclass(eq=False)
class Call:
    """One call's peer connection and counters (packets echoed, sequence gaps, late arrivals)."""

    pc: RTCPeerConnection
    track: PacketTrack
    url: str = ""
    janus: bool = False
    setup_ms: float | None = None
    connected_at: float = 0.0
    first_echo_at: float = 0.0
    error: str = ""
    received: int = 0
    gap_lost: int = 0
    late: int = 0
    _last_seq: int = -1
    _last_at: float = 0.0

    @property
    def first_audio_after_dtls_ms(self) -> float | None:
        """From DTLS connected (connectionState ``connected``) to the first echoed packet, ms; None before both."""
        if not self.connected_at or not self.first_echo_at:
            return None
        return (self.first_echo_at - self.connected_at) * 1000

    def on_packet(self, packet) -> None:
        now = time.monotonic()
        if not self.first_echo_at:
            self.first_echo_at = now
        self.received += 1
        if self._last_seq >= 0:
            gap = (packet.sequence_number - self._last_seq) & 0xFFFF
            if 1 < gap < 1000:
                self.gap_lost += gap - 1
            if now - self._last_at > LATE_IAT_S:
                self.late += 1
        self._last_seq = packet.sequence_number
        self._last_at = now


def _new_call(packets: list[bytes]) -> tuple[Call, asyncio.Event]:
    """A peer connection sending ``packets`` (Opus only) with the echo tap; the event is set on connected."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    call = Call(pc, PacketTrack(packets, random.randrange(len(packets))))
    transceiver = pc.addTransceiver(call.track, direction="sendrecv")
    transceiver.setCodecPreferences(
        [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == "audio/opus"])
    hooks.tap_receiver(transceiver.receiver, call.on_packet)
    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    def _state() -> None:
        if pc.connectionState == "connected":
            call.connected_at = time.monotonic()
            connected.set()

    return call, connected


async def _whip_answer(http: aiohttp.ClientSession, url: str, call: Call) -> str:
    """POST the offer (RFC 9725 4.2, non-trickle), retrying 503; sets ``call.url``; returns the answer SDP."""
    while True:
        async with http.post(url, data=call.pc.localDescription.sdp,
                             headers={"Content-Type": "application/sdp"}) as resp:
            body = await resp.text()
            if resp.status == 201:
                call.url = str(resp.url.join(URL(resp.headers["Location"])))
                return body
            if resp.status != 503:
                raise RuntimeError(f"POST -> {resp.status}")
        await asyncio.sleep(0.2)


async def janus_request(http: aiohttp.ClientSession, url: str, body: dict) -> dict:
    """POST one Janus API request (a fresh ``transaction``) to ``url``; returns the reply.
    Raises RuntimeError on a Janus ``error`` reply."""
    async with http.post(url, json={**body, "transaction": secrets.token_hex(6)}) as resp:
        reply = await resp.json(content_type=None)
    if reply.get("janus") == "error":
        raise RuntimeError(f"janus {body['janus']}: {reply['error'].get('reason', reply['error'])}")
    return reply


async def _janus_answer(http: aiohttp.ClientSession, base: str, call: Call) -> str:
    """Set up an EchoTest session at ``base`` (http://host:8088/janus) with the offer; sets ``call.url`` (the
    Janus session, destroyed at hang-up); returns the answer SDP from the plugin's event (long poll)."""
    session = (await janus_request(http, base, {"janus": "create"}))["data"]["id"]
    call.url = f"{base}/{session}"
    handle = (await janus_request(http, call.url, {"janus": "attach", "plugin": "janus.plugin.echotest"}))["data"]["id"]
    await janus_request(http, f"{call.url}/{handle}", {
        "janus": "message", "body": {"audio": True, "video": False},
        "jsep": {"type": "offer", "sdp": call.pc.localDescription.sdp}})
    # aiortc does not trickle: without "completed" Janus waits for more candidates before ICE.
    await janus_request(http, f"{call.url}/{handle}", {"janus": "trickle", "candidate": {"completed": True}})
    while True:
        async with http.get(f"{call.url}?maxev=1") as resp:
            event = await resp.json(content_type=None)
        for item in event if isinstance(event, list) else [event]:
            if item.get("jsep", {}).get("type") == "answer":
                return item["jsep"]["sdp"]


async def open_call(http: aiohttp.ClientSession, url: str, packets: list[bytes], timeout_s: float,
                    janus: bool = False, wideband: list[bytes] | None = None) -> Call:
    """Set up one call to ``url``: WHIP, or Janus EchoTest when ``janus``; retries a WHIP 503 until
    ``timeout_s``. Sends ``wideband`` (the same speech coded wideband) instead of ``packets`` if given and the
    answer's ``maxplaybackrate`` is WIDEBAND_PLAYBACK_HZ or less. Never raises: a failure is in ``call.error``."""
    call, connected = _new_call(packets)
    call.janus = janus
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            await call.pc.setLocalDescription(await call.pc.createOffer())
            answer = await (_janus_answer(http, url, call) if janus else _whip_answer(http, url, call))
            await call.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            rate = max_playback_rate(answer)
            if wideband is not None and rate is not None and rate <= WIDEBAND_PLAYBACK_HZ:
                call.track.packets = wideband
            await connected.wait()
        call.setup_ms = (time.monotonic() - t0) * 1000
    except (TimeoutError, RuntimeError, aiohttp.ClientError, ValueError, KeyError) as exc:
        call.error = type(exc).__name__ if not str(exc) else str(exc)
    return call


async def wait_janus(http: aiohttp.ClientSession, base: str, timeout_s: float = 20.0) -> None:
    """Wait until Janus answers ``GET base/info``. Raises TimeoutError."""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                async with http.get(f"{base}/info") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


def process_cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` (all threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_rss_mb(pid: int) -> float:
    """Resident set size of process ``pid``, MB (VmRSS from /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cores_busy_s() -> dict[str, float]:
    """Busy seconds of each core since boot (all but idle and iowait), from /proc/stat."""
    busy = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                ticks = [int(v) for v in values]
                busy[name[3:]] = (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLK_TCK
    return busy


@dataclass
class Window:
    """What the window measured; CPU in % of one core.

    ``sent``: packets sent in the window. ``in_flight``: packets sent before it and not yet echoed when it
    began. ``received``: packets echoed from the window's start until the echo stopped after the senders
    halted at its end. ``loss_pct`` = 100 * (1 - received / (in_flight + sent)): a stall at either edge of
    the window does not count as loss, and packets lost before the window but still unaccounted for at
    its start count against it (the estimate errs high, by at most the in-flight packets).
    ``first_audio_minus_dtls_ms_*``: from
    DTLS connected to the first echoed packet, over the calls. ``rss_mb_idle``: each process's RSS (MB) before
    the first call; ``rss_mb``: at the window's end. ``setup_wall_s``: from the first offer until every call was set up or had
    failed. ``throttled_pct``: with a cgroup's ``cpu.stat`` (``--cpu-stat``), the % of its CFS periods in the
    window in which its quota held it back (None without)."""

    n: int
    connected: int
    errors: list[str]
    setup_ms_p50: float | None
    setup_ms_max: float | None
    setup_wall_s: float
    first_audio_minus_dtls_ms_p50: float | None
    first_audio_minus_dtls_ms_max: float | None
    window_s: float
    sent: int
    in_flight: int
    received: int
    loss_pct: float
    gap_lost: int
    late_pct: float
    cpu_pct: dict[str, float] = field(default_factory=dict)
    core_busy_pct: dict[str, float] = field(default_factory=dict)
    rss_mb_idle: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    throttled_pct: float | None = None

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def _snapshot(calls: list[Call], pids: dict[str, int]) -> tuple[float, int, int, int, int, dict, dict]:
    cpu = {name: process_cpu_s(pid) for name, pid in pids.items()}
    cpu["client"] = process_cpu_s(os.getpid())
    return (time.monotonic(), sum(c.track.sent for c in calls), sum(c.received for c in calls),
            sum(c.gap_lost for c in calls), sum(c.late for c in calls), cpu, cores_busy_s())


def cfs_periods(cpu_stat: str) -> tuple[int, int]:
    """(CFS periods elapsed, periods throttled) from a cgroup's ``cpu.stat`` (v1 and v2 name them alike)."""
    with open(cpu_stat) as f:
        stat = dict(line.split() for line in f if line.strip())
    return int(stat["nr_periods"]), int(stat["nr_throttled"])


async def _drained(calls: list[Call], quiet_s: float = 0.5, max_s: float = 5.0) -> int:
    """Wait until no echo arrived for ``quiet_s`` (or ``max_s`` passed); returns the packets received in all."""
    deadline = time.monotonic() + max_s
    received = -1
    while time.monotonic() < deadline:
        now = sum(c.received for c in calls)
        if now == received:
            break
        received = now
        await asyncio.sleep(quiet_s)
    return sum(c.received for c in calls)


async def run(url: str, n: int, pids: dict[str, int], settle_s: float, window_s: float,
              parallel: int = 8, timeout_s: float = 30.0, janus: bool = False, bind: str = LOOPBACK,
              cpu_stat: str | None = None) -> Window:
    """Open ``n`` calls to ``url`` (WHIP, or Janus EchoTest when ``janus``; ``parallel`` at a time, ICE on
    ``bind``), settle, measure one window (with the throttling in the cgroup ``cpu_stat`` file), hang up."""
    packets = encode_speech()
    wideband = encode_speech(max_bandwidth=opuslib_next.BANDWIDTH_WIDEBAND)
    gate = asyncio.Semaphore(parallel)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=40)) as http:
        async def opened() -> Call:
            async with gate:
                return await open_call(http, url, packets, timeout_s, janus, wideband)

        if janus:
            await wait_janus(http, url)
        rss_idle = {name: round(process_rss_mb(pid), 1) for name, pid in pids.items()}
        setup_t0 = time.monotonic()
        with hooks.gather_on(bind):
            calls = await asyncio.gather(*(opened() for _ in range(n)))
        setup_wall_s = time.monotonic() - setup_t0
        live = [c for c in calls if not c.error]
        await asyncio.sleep(settle_s)
        periods0 = cfs_periods(cpu_stat) if cpu_stat else (0, 0)
        t0, sent0, recv0, gap0, late0, cpu0, busy0 = _snapshot(live, pids)
        await asyncio.sleep(window_s)
        t1, sent1, recv1, gap1, late1, cpu1, busy1 = _snapshot(live, pids)
        periods1 = cfs_periods(cpu_stat) if cpu_stat else (0, 0)
        periods = periods1[0] - periods0[0]
        for call in live:
            call.track.halt()
        recv_end = await _drained(live)
        elapsed = t1 - t0
        sent, in_flight, received = sent1 - sent0, sent0 - recv0, recv_end - recv0
        setups = [c.setup_ms for c in live]
        first_audio = [ms for c in live if (ms := c.first_audio_after_dtls_ms) is not None]
        window = Window(
            n=n,
            connected=len(live),
            errors=sorted({c.error for c in calls if c.error}),
            setup_ms_p50=round(statistics.median(setups), 1) if setups else None,
            setup_ms_max=round(max(setups), 1) if setups else None,
            setup_wall_s=round(setup_wall_s, 3),
            first_audio_minus_dtls_ms_p50=round(statistics.median(first_audio), 1) if first_audio else None,
            first_audio_minus_dtls_ms_max=round(max(first_audio), 1) if first_audio else None,
            window_s=round(elapsed, 3),
            sent=sent,
            in_flight=in_flight,
            received=received,
            loss_pct=round(100 * (1 - received / (in_flight + sent)), 3) if sent else 100.0,
            gap_lost=gap1 - gap0,
            late_pct=round(100 * (late1 - late0) / (recv1 - recv0), 3) if recv1 > recv0 else 0.0,
            cpu_pct={k: round(100 * (cpu1[k] - cpu0[k]) / elapsed, 2) for k in cpu1},
            core_busy_pct={k: round(100 * (busy1[k] - busy0[k]) / elapsed, 2) for k in busy1},
            rss_mb_idle=rss_idle,
            rss_mb={name: round(process_rss_mb(pid), 1) for name, pid in pids.items()},
            throttled_pct=round(100 * (periods1[1] - periods0[1]) / periods, 2) if cpu_stat and periods else None,
        )
        print(json.dumps(window.to_dict()), flush=True)

        async def hang_up(call: Call) -> None:
            try:
                if call.janus:
                    await janus_request(http, call.url, {"janus": "destroy"})
                else:
                    async with http.delete(call.url):
                        pass
            except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError):
                pass
            await call.pc.close()

        async with asyncio.timeout(20):
            await asyncio.gather(*(hang_up(c) for c in calls if c.url), return_exceptions=True)
            await asyncio.gather(*(c.pc.close() for c in calls if not c.url), return_exceptions=True)
        return window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="WHIP endpoint (http://127.0.0.1:port/v1/sessions)")
    target.add_argument("--janus", help="Janus HTTP API root (http://127.0.0.1:8088/janus): EchoTest sessions")
    parser.add_argument("--bind", default=LOOPBACK, help="local address to gather ICE candidates on")
    parser.add_argument("--n", type=int, required=True, help="concurrent calls")
    parser.add_argument("--pid", action="append", default=[], metavar="NAME=PID",
                        help="a process whose CPU time to measure in the window (repeatable)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after every call connected")
    parser.add_argument("--window", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--parallel", type=int, default=8, help="calls being set up at once")
    parser.add_argument("--cpu-stat", help="a cgroup's cpu.stat: report how often its CPU quota held it back")
    args = parser.parse_args()
    pids = {name: int(pid) for name, pid in (p.split("=", 1) for p in args.pid)}
    uvloop.run(run(args.url or args.janus, args.n, pids, args.settle, args.window, janus=bool(args.janus),
                   bind=args.bind, parallel=args.parallel, cpu_stat=args.cpu_stat))


if __name__ == "__main__":
    main()
