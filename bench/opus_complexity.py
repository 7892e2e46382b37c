"""Benchmark: the Opus encoder complexity for the agent's PCM16, quality against CPU.

For each libopus complexity 0-10, the bundled speech at the agent's rate (16 kHz) goes through the
transceiver's own OpusEncoder (32 kbit/s, VoIP, 20 ms) and OpusDecoder (core/media.py), and the result is
scored against the original with wideband PESQ (ITU-T P.862.2, the ``pesq`` package: MOS-LQO, 1.0-4.64)
beside the encoder's CPU per 20 ms frame (best of ``--repeat`` passes, process time). The transceiver's
default (core/media.py DEFAULT_COMPLEXITY) is the lowest complexity whose score is within ``--tolerance``
of complexity 10's.

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
from voicemesh.core.media import DEFAULT_COMPLEXITY, FRAME_MS, OpusDecoder, OpusEncoder

RATE_HZ = 16_000


def score(speech: np.ndarray, complexity: int, repeat: int) -> dict:
    """PESQ WB of ``speech`` (int16 at RATE_HZ) through Opus at ``complexity``, and the encoder's µs per frame."""
    pcm = speech.tobytes()
    best = float("inf")
    for _ in range(repeat):
        encoder = OpusEncoder(RATE_HZ, complexity=complexity)
        start = time.process_time()
        packets = encoder.encode(pcm)
        best = min(best, (time.process_time() - start) / len(packets))
    decoder = OpusDecoder(RATE_HZ)
    decoded = np.frombuffer(b"".join(decoder.decode(p) for p in packets), dtype=np.int16)
    size = min(len(decoded), len(speech))
    mos = pesq(RATE_HZ, speech[:size].astype(np.float64), decoded[:size].astype(np.float64), "wb")
    return {"complexity": complexity, "pesq_wb": round(float(mos), 3), "encode_us_per_frame": round(best * 1e6, 1),
            "encode_ms_per_session_s": round(best * 1e3 * 1000 / FRAME_MS, 2)}


def main(argv: list[str] | None = None) -> dict:
    """Score every complexity; print the table and the JSON summary (``rows``, ``chosen``, ``default``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed passes per complexity (the best is kept)")
    parser.add_argument("--tolerance", type=float, default=0.2, help="PESQ points below complexity 10 accepted")
    args = parser.parse_args(argv)
    speech = audio.load_wav_mono(bundled_speech(), RATE_HZ).astype(np.int16)
    rows = [score(speech, complexity, args.repeat) for complexity in range(11)]
    reference = rows[-1]["pesq_wb"]
    chosen = next(r["complexity"] for r in rows if r["pesq_wb"] >= reference - args.tolerance)
    print(f"{'complexity':>10} {'PESQ WB':>8} {'encode us/frame':>16} {'ms/session-s':>13}")
    for row in rows:
        print(f"{row['complexity']:>10} {row['pesq_wb']:>8.3f} {row['encode_us_per_frame']:>16.1f} "
              f"{row['encode_ms_per_session_s']:>13.2f}")
    summary = {"rate_hz": RATE_HZ, "bitrate": 32_000, "tolerance": args.tolerance, "rows": rows,
               "chosen": chosen, "default": DEFAULT_COMPLEXITY}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
