"""Benchmark: the Opus encoder settings for the agent's PCM16, quality against CPU and bitrate.

For each libopus application and bitrate in PROFILES and each complexity 0-10, the bundled speech at the
agent's rate (16 kHz) goes through the transceiver's own OpusEncoder (20 ms frames, variable bitrate) and
OpusDecoder (core/media.py), and the result is scored against the original with wideband PESQ (ITU-T
P.862.2, the ``pesq`` package: MOS-LQO, 1.0-4.64) beside the encoder's CPU per 20 ms frame (best of
``--repeat`` passes, process time) and the bitrate it actually used. The quality floor is the score of
the reference, SILK (``voip``) at complexity 10 and 32 kbit/s (what browsers send for voice), less
``--tolerance``; for each application and bitrate, ``lowest`` is the lowest complexity at or above the
floor. The transceiver's default (core/media.py DEFAULT_*) must be at or above it (``default_ok``).

``python bench/opus_complexity.py`` prints a table and, as its last line, one JSON object.
Needs ``pip install -e '.[bench]'`` (``pesq``, which builds a C extension: gcc).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from pesq import pesq

from voicemesh.app import audio
from voicemesh.app.demo import bundled_speech
from voicemesh.core.media import (
    DEFAULT_APPLICATION,
    DEFAULT_BITRATE,
    DEFAULT_COMPLEXITY,
    FRAME_MS,
    OpusDecoder,
    OpusEncoder,
)

RATE_HZ = 16_000
REFERENCE = ("voip", 32_000, 10)
"""Application, bitrate (bit/s) and complexity whose PESQ sets the quality floor."""
PROFILES = [("voip", 32_000), ("voip", 48_000), ("lowdelay", 48_000), ("lowdelay", 56_000), ("lowdelay", 64_000)]
"""Applications and bitrates (bit/s) measured, each at every complexity."""


def score(speech: np.ndarray, application: str, bitrate: int, complexity: int, repeat: int) -> dict:
    """PESQ WB of ``speech`` (int16 at RATE_HZ) through Opus with these settings, the encoder's µs per frame
    and the bitrate it used (kbit/s)."""
    pcm = speech.tobytes()
    best = float("inf")
    for _ in range(repeat):
        encoder = OpusEncoder(RATE_HZ, bitrate=bitrate, complexity=complexity, application=application)
        start = time.process_time()
        packets = encoder.encode(pcm)
        best = min(best, (time.process_time() - start) / len(packets))
    decoder = OpusDecoder(RATE_HZ)
    decoded = np.frombuffer(b"".join(decoder.decode(p) for p in packets), dtype=np.int16)
    size = min(len(decoded), len(speech))
    mos = pesq(RATE_HZ, speech[:size].astype(np.float64), decoded[:size].astype(np.float64), "wb")
    return {"application": application, "bitrate": bitrate, "complexity": complexity,
            "pesq_wb": round(float(mos), 3), "kbit_s": round(sum(map(len, packets)) * 8 / len(packets) / FRAME_MS, 1),
            "encode_us_per_frame": round(best * 1e6, 1), "encode_ms_per_session_s": round(best * 1e3 * 1000 / FRAME_MS, 2)}


def main(argv: list[str] | None = None) -> dict:
    """Score every profile at every complexity; print the table and the JSON summary (``rows``, ``floor``,
    ``lowest`` per profile, ``default`` and ``default_ok``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed passes per setting (the best is kept)")
    parser.add_argument("--tolerance", type=float, default=0.2, help="PESQ points below the reference accepted")
    args = parser.parse_args(argv)
    speech = audio.load_wav_mono(bundled_speech(), RATE_HZ).astype(np.int16)
    rows = [score(speech, application, bitrate, complexity, args.repeat)
            for application, bitrate in PROFILES for complexity in range(11)]
    pick = {(r["application"], r["bitrate"], r["complexity"]): r for r in rows}
    floor = round(pick[REFERENCE]["pesq_wb"] - args.tolerance, 3)
    lowest = {f"{application} {bitrate}": next((r["complexity"] for r in rows if r["application"] == application
                                                and r["bitrate"] == bitrate and r["pesq_wb"] >= floor), None)
              for application, bitrate in PROFILES}
    print(f"{'application':>11} {'bit/s':>6} {'complexity':>10} {'PESQ WB':>8} {'kbit/s':>7} {'encode us/frame':>16} "
          f"{'ms/session-s':>13}")
    for r in rows:
        print(f"{r['application']:>11} {r['bitrate']:>6} {r['complexity']:>10} {r['pesq_wb']:>8.3f} {r['kbit_s']:>7.1f} "
              f"{r['encode_us_per_frame']:>16.1f} {r['encode_ms_per_session_s']:>13.2f}")
    default = pick.get((DEFAULT_APPLICATION, DEFAULT_BITRATE, DEFAULT_COMPLEXITY))
    summary = {"rate_hz": RATE_HZ, "reference": list(REFERENCE), "tolerance": args.tolerance, "floor": floor,
               "rows": rows, "lowest": lowest, "default": default,
               "default_ok": default is not None and default["pesq_wb"] >= floor}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
