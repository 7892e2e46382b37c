"""Load client for bench/transceiver.py: N concurrent WHIP calls from one process, measured in a window.

Each call sends pre-encoded 20 ms Opus packets (the bundled speech, encoded
once at 32 kbit/s mono, each call from a random offset) as ``av.Packet``s on
an absolute 50 packets/s schedule, so the client never encodes, and counts
the echoed RTP packets through ``core.hooks.tap_receiver`` without a jitter
buffer or decoder. ICE gathers on 127.0.0.1 only. After every call is
connected and a settle time has passed, it reads the CPU time of the given
processes and the packets sent over a window, then halts the senders and
counts the echoes until they stop, prints one JSON object (the fields of
``Window``) as its last line and hangs up.

Run it as ``python bench/load_client.py --url WHIP --n N --pid trx=PID ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from dataclasses import dataclass, field
from fractions import Fraction

import aiohttp
import av
import uvloop
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from yarl import URL

from voicemesh.app import audio
from voicemesh.app.demo import bundled_speech
from voicemesh.core import hooks
from voicemesh.core.media import RTP_CLOCK_HZ, SAMPLES_PER_FRAME, OpusEncoder

FRAME_S = 0.02
LATE_IAT_S = 0.06
"""An echoed packet arriving more than this (s) after the previous one counts as late."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOOPBACK = "127.0.0.1"


def encode_speech(bitrate: int = 32_000) -> list[bytes]:
    """The bundled speech as 20 ms Opus packets (48 kHz mono, ``bitrate`` bit/s, what browsers send)."""
    encoder = OpusEncoder(RTP_CLOCK_HZ, bitrate)
    return encoder.encode(audio.load_wav_mono(bundled_speech(), RTP_CLOCK_HZ).tobytes())


class PacketTrack(MediaStreamTrack):
    """Plays ``packets`` in a loop from ``offset``, one every 20 ms on an absolute schedule, until ``halt()``;
    counts ``sent``."""

    kind = "audio"

    def __init__(self, packets: list[bytes], offset: int) -> None:
        super().__init__()
        self._packets = packets
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
        packet = av.Packet(self._packets[(self._offset + self.sent) % len(self._packets)])
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
    setup_ms: float | None = None
    error: str = ""
    received: int = 0
    gap_lost: int = 0
    late: int = 0
    _last_seq: int = -1
    _last_at: float = 0.0

    def on_packet(self, packet) -> None:
        now = time.monotonic()
        self.received += 1
        if self._last_seq >= 0:
            gap = (packet.sequence_number - self._last_seq) & 0xFFFF
            if 1 < gap < 1000:
                self.gap_lost += gap - 1
            if now - self._last_at > LATE_IAT_S:
                self.late += 1
        self._last_seq = packet.sequence_number
        self._last_at = now


async def open_call(http: aiohttp.ClientSession, url: str, packets: list[bytes], timeout_s: float) -> Call:
    """Set up one WHIP call (RFC 9725 4.2, non-trickle); retries 503 until ``timeout_s``. Never raises."""
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
            connected.set()

    t0 = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            await pc.setLocalDescription(await pc.createOffer())
            while True:
                async with http.post(url, data=pc.localDescription.sdp,
                                     headers={"Content-Type": "application/sdp"}) as resp:
                    body = await resp.text()
                    if resp.status == 201:
                        call.url = str(resp.url.join(URL(resp.headers["Location"])))
                        break
                    if resp.status != 503:
                        raise RuntimeError(f"POST -> {resp.status}")
                await asyncio.sleep(0.2)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
            await connected.wait()
        call.setup_ms = (time.monotonic() - t0) * 1000
    except (TimeoutError, RuntimeError, aiohttp.ClientError, ValueError, KeyError) as exc:
        call.error = type(exc).__name__ if not str(exc) else str(exc)
    return call


def process_cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` (all threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


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
    its start count against it (the estimate errs high, by at most the in-flight packets). In PCM16 mode
    the transceiver's resampler delay leaves each call's last partial frame in its encoder when the sender
    halts: 1 packet per call, 0.2 % of a 10 s window, shows as loss."""

    n: int
    connected: int
    errors: list[str]
    setup_ms_p50: float | None
    setup_ms_max: float | None
    window_s: float
    sent: int
    in_flight: int
    received: int
    loss_pct: float
    gap_lost: int
    late_pct: float
    cpu_pct: dict[str, float] = field(default_factory=dict)
    core_busy_pct: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def _snapshot(calls: list[Call], pids: dict[str, int]) -> tuple[float, int, int, int, int, dict, dict]:
    cpu = {name: process_cpu_s(pid) for name, pid in pids.items()}
    cpu["client"] = process_cpu_s(os.getpid())
    return (time.monotonic(), sum(c.track.sent for c in calls), sum(c.received for c in calls),
            sum(c.gap_lost for c in calls), sum(c.late for c in calls), cpu, cores_busy_s())


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
              parallel: int = 8, timeout_s: float = 30.0) -> Window:
    """Open ``n`` calls to ``url`` (``parallel`` at a time), settle, measure one window, hang up."""
    packets = encode_speech()
    gate = asyncio.Semaphore(parallel)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async def opened() -> Call:
            async with gate:
                return await open_call(http, url, packets, timeout_s)

        with hooks.gather_on(LOOPBACK):
            calls = await asyncio.gather(*(opened() for _ in range(n)))
        live = [c for c in calls if not c.error]
        await asyncio.sleep(settle_s)
        t0, sent0, recv0, gap0, late0, cpu0, busy0 = _snapshot(live, pids)
        await asyncio.sleep(window_s)
        t1, sent1, recv1, gap1, late1, cpu1, busy1 = _snapshot(live, pids)
        for call in live:
            call.track.halt()
        recv_end = await _drained(live)
        elapsed = t1 - t0
        sent, in_flight, received = sent1 - sent0, sent0 - recv0, recv_end - recv0
        setups = [c.setup_ms for c in live]
        window = Window(
            n=n,
            connected=len(live),
            errors=sorted({c.error for c in calls if c.error}),
            setup_ms_p50=round(statistics.median(setups), 1) if setups else None,
            setup_ms_max=round(max(setups), 1) if setups else None,
            window_s=round(elapsed, 3),
            sent=sent,
            in_flight=in_flight,
            received=received,
            loss_pct=round(100 * (1 - received / (in_flight + sent)), 3) if sent else 100.0,
            gap_lost=gap1 - gap0,
            late_pct=round(100 * (late1 - late0) / (recv1 - recv0), 3) if recv1 > recv0 else 0.0,
            cpu_pct={k: round(100 * (cpu1[k] - cpu0[k]) / elapsed, 2) for k in cpu1},
            core_busy_pct={k: round(100 * (busy1[k] - busy0[k]) / elapsed, 2) for k in busy1},
        )
        print(json.dumps(window.to_dict()), flush=True)

        async def hang_up(call: Call) -> None:
            try:
                async with http.delete(call.url):
                    pass
            except (aiohttp.ClientError, TimeoutError):
                pass
            await call.pc.close()

        async with asyncio.timeout(20):
            await asyncio.gather(*(hang_up(c) for c in calls if c.url), return_exceptions=True)
            await asyncio.gather(*(c.pc.close() for c in calls if not c.url), return_exceptions=True)
        return window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="WHIP endpoint (http://127.0.0.1:port/v1/sessions)")
    parser.add_argument("--n", type=int, required=True, help="concurrent calls")
    parser.add_argument("--pid", action="append", default=[], metavar="NAME=PID",
                        help="a process whose CPU time to measure in the window (repeatable)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after every call connected")
    parser.add_argument("--window", type=float, default=10.0, help="measured seconds")
    args = parser.parse_args()
    pids = {name: int(pid) for name, pid in (p.split("=", 1) for p in args.pid)}
    uvloop.run(run(args.url, args.n, pids, args.settle, args.window))


if __name__ == "__main__":
    main()
