"""`make bench`: the relay benchmark and the transceiver benchmark in one run.

Each prints its own table; this prints, as its last line, one JSON object
with both sets of figures (relay vs direct path and coturn; transceiver CPU
per session-second and sessions per core in Opus and PCM16 modes).
Benchmarks never gate CI: they measure, they do not assert.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import relay  # noqa: E402
import transceiver  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    """Run both benchmarks; ``--quick`` shortens both. Returns the merged figures."""
    args = list(sys.argv[1:] if argv is None else argv)
    quick = ["--quick"] if "--quick" in args else []
    figures = {**relay.main(quick), **transceiver.main(quick)}
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
