"""Cost of one city lookup: ``maxminddb``'s Reader (what the geo DNS server uses, edge/geodns.py
mmdb_locator) against ``geoip2``'s ``database.Reader.city`` over the same file.

It writes a GeoIP2-City database of 200 /24s as the lab does (mmdb-writer), then times 20,000 lookups of
addresses it holds ("hit") and 20,000 it does not ("miss") with each reader, best of 5 rounds, and prints
microseconds per lookup and, as its last line, one JSON object. geoip2 is not a dependency of voicemesh:
run it in an environment that has it (``pip install geoip2 maxminddb mmdb-writer netaddr``):
``python bench/geoip_readers.py``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import geoip2.database
import geoip2.errors
import maxminddb
from mmdb_writer import MMDBWriter
from netaddr import IPSet

LOOKUPS = 20_000
ROUNDS = 5


def write_database(path: Path) -> None:
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City", languages=["en"],
                        description={"en": "voicemesh bench: 200 cities"})
    for i in range(200):
        writer.insert_network(IPSet([f"10.77.{i}.0/24"]), {
            "city": {"names": {"en": f"city-{i}"}},
            "location": {"latitude": -50.0 + i / 2, "longitude": 8.0, "accuracy_radius": 20}})
    writer.to_db_file(str(path))


def maxminddb_lookup(reader: maxminddb.Reader) -> Callable[[str], bool]:
    def located(address: str) -> bool:
        record = reader.get(address)
        return isinstance(record, dict) and "location" in record
    return located


def geoip2_lookup(reader: geoip2.database.Reader) -> Callable[[str], bool]:
    def located(address: str) -> bool:
        try:
            return reader.city(address).location.latitude is not None
        except geoip2.errors.AddressNotFoundError:
            return False
    return located


def per_lookup_us(located: Callable[[str], bool], addresses: list[str]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for address in addresses:
            located(address)
        best = min(best, time.perf_counter() - start)
    return round(best / len(addresses) * 1e6, 2)


def main() -> None:
    hits = [f"10.77.{i % 200}.{i % 250 + 1}" for i in range(LOOKUPS)]
    misses = [f"192.0.{i % 250}.{i % 250 + 1}" for i in range(LOOKUPS)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cities.mmdb"
        write_database(path)
        with maxminddb.open_database(str(path)) as low, geoip2.database.Reader(str(path)) as high:
            assert maxminddb_lookup(low)(hits[0]) and geoip2_lookup(high)(hits[0])
            result = {f"{name}_{kind}_us": per_lookup_us(lookup, addresses)
                      for name, lookup in (("maxminddb", maxminddb_lookup(low)), ("geoip2", geoip2_lookup(high)))
                      for kind, addresses in (("hit", hits), ("miss", misses))}
    for key, value in result.items():
        print(f"{key.removesuffix('_us').replace('_', ' ')}: {value} µs per lookup")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
