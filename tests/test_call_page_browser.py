"""The call page (edge/static/call.html) in headless Chromium through an embedded mesh: a live call shows its
state, levels, serving edge and region, setup milestones and live figures, and is screenshotted.

The screenshot goes to pytest's tmp path; ``make call-page-png`` (``VOICEMESH_CALL_PAGE_PNG=docs/call-page.png``)
copies it to the README's copy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from voicemesh.app.demo import bundled_speech, embedded_mesh
from voicemesh.app.lab.browser import CHROMIUM, browser_call

pytestmark = [pytest.mark.system, pytest.mark.skipif(not shutil.which(CHROMIUM), reason="no Chromium")]

MILESTONES = ["post_sent", "answer", "ice_connected", "dtls_connected", "first_audio"]


async def test_a_live_call_on_the_call_page_shows_who_serves_it_and_how_it_set_up(tmp_path: Path) -> None:
    png = tmp_path / "call-page.png"
    async with embedded_mesh() as mesh:
        result = await browser_call(f"{mesh.edge.url}/", bundled_speech(), seconds=6, screenshot=png)

        assert result["ok"] and not result["redials"], result
        assert (result["edge"], result["region"]) == (mesh.edge.config.node_id, mesh.transceiver.config.region)
        setup = result["setup_ms"]
        assert sorted(setup, key=setup.__getitem__) == MILESTONES, "each milestone, in the order a call makes them"
        assert result["rtt_ms"] is not None and result["inbound"]["jitter_ms"] is not None
        assert mesh.transceiver.sessions == {}, "the page hung up with DELETE"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    if target := os.environ.get("VOICEMESH_CALL_PAGE_PNG"):
        shutil.copyfile(png, target)
