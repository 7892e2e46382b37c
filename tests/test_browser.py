"""Chromium calls through a whole embedded mesh on loopback from the edge's call page
(voicemesh/app/lab/browser.py), with a client token as an app's backend would hand one to its page."""

from __future__ import annotations

import shutil

import aiohttp
import pytest

from voicemesh.app.demo import bundled_speech, embedded_mesh
from voicemesh.app.lab.browser import CHROMIUM, browser_call

pytestmark = [pytest.mark.system, pytest.mark.skipif(not shutil.which(CHROMIUM), reason="no Chromium")]

API_KEY = "sk-page-" + "3" * 24


async def test_chromium_calls_with_a_client_token_bound_to_the_page_origin() -> None:
    async with embedded_mesh(edge_options={"api_keys": f"app:{API_KEY}"}) as mesh:
        result = await browser_call(f"{mesh.edge.url}/", bundled_speech(), seconds=3, api_key=API_KEY)

        assert result["ok"], result
        async with aiohttp.ClientSession() as http, http.get(f"{mesh.edge.url}/v1/status") as resp:
            whip = (await resp.json())["whip"]
        assert whip["client_tokens_issued"] == 1 and not any(k.startswith("unauthorized") for k in whip)
        assert mesh.transceiver.sessions == {}, "the page's DELETE, with its token, ended the session"


@pytest.mark.parametrize("codec", ["opus", "pcm16"])
async def test_chromium_hears_its_echo_over_the_lean_media_path(codec: str) -> None:
    async with embedded_mesh(agent_codec=codec, media_path="lean") as mesh:
        result = await browser_call(f"{mesh.edge.url}/", bundled_speech(), seconds=3)

        assert result["ok"], result
        assert result["inbound"]["packets_received"] > 100 and result["inbound"]["packets_lost"] == 0, result
        counters = mesh.transceiver.media_counters
        assert counters["lean_rx"] > 100 and counters["lean_tx"] > 100, "Chromium's SRTP took the lean path"
        assert not {"srtp_error", "rtp_malformed", "rtp_payload_type"} & set(counters), counters
        if codec == "pcm16":
            # The answer's maxplaybackrate=16000 (the agent's rate) caps Chromium's encoder: wideband SILK.
            assert {k: v for k, v in counters.items() if k.startswith("pcm_rx_")} == {"pcm_rx_wideband": 1}, counters
