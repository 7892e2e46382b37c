"""A Chromium call over ICE-TCP (RFC 6544, RFC 4571 framing): Chromium runs in a network namespace whose UDP
is dropped by nftables, reaches the embedded mesh's edge over a veth pair, and completes the call through the
edge's passive TCP candidate on port 443; the echo agent's speech comes back. With UDP open, the same
answer keeps the call on UDP."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys

import aiohttp
import pytest

from voicemesh.app.demo import bundled_speech, embedded_mesh
from voicemesh.app.lab.browser import CHROMIUM

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason="no Chromium"),
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"),
                       reason="needs root, nftables and iproute2 for a network namespace"),
]

PREFIX = "icetcp"
"""Namespace and veth names start with this (parallel runs never collide; the test removes them)."""
DROP_UDP = """table inet {table} {{
  chain input {{ type filter hook input priority 0; policy accept; meta l4proto udp counter drop; }}
  chain output {{ type filter hook output priority 0; policy accept; meta l4proto udp counter drop; }}
}}"""


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


class UdpBlockedNamespace:
    """A network namespace joined to the host by a veth pair (host side ``host_ip``), whose UDP is dropped
    both ways by an nftables table."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.name, self.table = f"{PREFIX}-{tag}", f"{PREFIX}_{tag}"
        self.host_if, self.ns_if = f"ictp{tag}h", f"ictp{tag}n"
        # Chromium refuses a candidate on port 80 or 443 of a private address (libwebrtc VerifyCandidate), as
        # an edge's is not: the veth pair gets a /30 of 198.18.0.0/15 (RFC 2544, not private, not routed).
        subnet = f"198.18.{secrets.randbelow(256)}.{4 * secrets.randbelow(64)}"
        base = subnet.rsplit(".", 1)
        self.host_ip, self.ns_ip = f"{base[0]}.{int(base[1]) + 1}", f"{base[0]}.{int(base[1]) + 2}"

    def __enter__(self) -> UdpBlockedNamespace:
        sh("ip", "netns", "add", self.name)
        try:
            sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if, "netns", self.name)
            sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            sh("ip", "link", "set", self.host_if, "up")
            for argv in (("ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if),
                         ("ip", "link", "set", self.ns_if, "up"), ("ip", "link", "set", "lo", "up")):
                sh("ip", "netns", "exec", self.name, *argv)
            subprocess.run(["ip", "netns", "exec", self.name, "nft", "-f", "-"], check=True, capture_output=True,
                           text=True, input=DROP_UDP.format(table=self.table))
        except BaseException:
            self.__exit__()
            raise
        return self

    def dropped_udp(self) -> int:
        """Packets the namespace's nftables dropped (both chains)."""
        rules = sh("ip", "netns", "exec", self.name, "nft", "-j", "list", "table", "inet", self.table)
        return sum(item["rule"]["expr"][1]["counter"]["packets"] for item in json.loads(rules)["nftables"]
                   if "rule" in item)

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


async def chromium_call(ns: UdpBlockedNamespace) -> tuple[dict, dict, dict]:
    """A call from Chromium in ``ns`` through an embedded mesh whose edge serves UDP and ICE-TCP on 443 on
    the host side of the veth: (the page's result, the edge's status, the mux's route events)."""
    async with embedded_mesh(edge_options={"public": f"{ns.host_ip}:0", "http": f"{ns.host_ip}:0",
                                           "relay_tcp": f"{ns.host_ip}:443", "insecure_open": True}) as mesh:
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", ns.name, sys.executable, "-m", "voicemesh.app.lab.browser",
            f"{mesh.edge.url}/", "--wav", bundled_speech(), "--seconds", "4",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert out, err.decode(errors="replace")[-2000:]
        result = json.loads(out.decode().strip().splitlines()[-1])
        async with aiohttp.ClientSession() as http, http.get(f"{mesh.edge.url}/v1/status") as resp:
            status = await resp.json()
        assert mesh.transceiver.mux is not None
        return result, status, dict(mesh.transceiver.mux.core.events)


async def test_chromium_with_udp_blocked_calls_over_tcp_443_and_hears_speech_back() -> None:
    with UdpBlockedNamespace() as ns:
        result, status, routes = await chromium_call(ns)

        assert result["ok"], json.dumps([result, status, routes])
        assert result["remote_address"] == f"{ns.host_ip}:443", "the selected pair is the edge's TCP candidate"
        assert result["inbound"]["total_audio_energy"] > 0 and not result["redials"]
        tcp, udp = status["by_transport"]["tcp"], status["by_transport"]["udp"]
        assert tcp["packets_in"] > 100 and tcp["packets_out"] > 100, tcp
        assert udp["packets_in"] == 0 and udp["flows"] == 0, "nothing came over UDP"
        assert tcp["accepted"] >= 1 and routes["route_learned_tcp"] >= 1
        assert ns.dropped_udp() > 0, "Chromium tried UDP first, and nftables dropped it"


async def test_chromium_with_udp_open_keeps_udp_beside_the_tcp_candidate() -> None:
    with UdpBlockedNamespace() as ns:
        sh("ip", "netns", "exec", ns.name, "nft", "delete", "table", "inet", ns.table)
        result, status, routes = await chromium_call(ns)

        assert result["ok"], json.dumps([result, status, routes])
        assert result["remote_address"] != f"{ns.host_ip}:443", "UDP's priority is above TCP's"
        tcp, udp = status["by_transport"]["tcp"], status["by_transport"]["udp"]
        assert udp["packets_in"] > 100 and tcp["packets_in"] == 0 and tcp["flows"] == 0, status["by_transport"]
