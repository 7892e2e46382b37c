"""`make bench`: the relay, transceiver and geo DNS benchmarks in one run.

Each prints its own table; this prints, as its last line, one JSON object
with all the figures (relay vs direct path and coturn; the transceiver alone
and the whole mesh beside Janus EchoTest, swept to the knee in Opus and PCM16
modes, with their ratios, first audio after DTLS, RSS per session and
``--workers`` 1 vs 2; DNS queries/s per core cached and uncached beside a
static responder). Benchmarks never gate CI: they measure, they do not assert.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import relay  # noqa: E402
import transceiver  # noqa: E402


def _dns_bench():
    """bench/dns.py by path: imported as ``dns`` it would shadow dnspython."""
    spec = importlib.util.spec_from_file_location("bench_dns", HERE / "dns.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> dict:
    """Run both benchmarks; ``--quick`` shortens both. Returns the merged figures."""
    args = list(sys.argv[1:] if argv is None else argv)
    quick = ["--quick"] if "--quick" in args else []
    figures = {**relay.main(quick), **transceiver.main(quick), **_dns_bench().main(quick)}
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
