"""The call page (edge/static/call.html) in headless Chromium through an embedded mesh: a call made with its
buttons shows its state, levels, serving edge and region, setup milestones, live figures and the events on
``oai-events``, and is screenshotted; a call the edge cannot take is re-dialled.

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


async def test_a_call_made_with_the_buttons_shows_who_serves_it_and_how_it_set_up(tmp_path: Path) -> None:
    png = tmp_path / "call-page.png"
    async with embedded_mesh() as mesh:
        result = await browser_call(f"{mesh.edge.url}/", bundled_speech(), seconds=6, screenshot=png, press=True)

        assert result["ok"] and not result["redials"], result
        assert (result["edge"], result["region"]) == (mesh.edge.config.node_id, mesh.transceiver.config.region)
        setup = result["setup_ms"]
        assert sorted(setup, key=setup.__getitem__) == MILESTONES, "each milestone, in the order a call makes them"
        assert result["rtt_ms"] is not None and result["inbound"]["jitter_ms"] is not None
        assert "input_audio_buffer.speech_started" in result["events"], "the transceiver's VAD, on oai-events"
        assert mesh.transceiver.sessions == {}, "Hang up sent DELETE"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    if target := os.environ.get("VOICEMESH_CALL_PAGE_PNG"):
        shutil.copyfile(png, target)


async def test_a_call_the_edge_cannot_take_is_redialled() -> None:
    """No transceiver has room: the first POST gets 503, and the page re-dials (1 s apart, at most 3 times)
    instead of giving up."""
    async with embedded_mesh(capacity=0) as mesh:
        result = await browser_call(f"{mesh.edge.url}/", bundled_speech(), seconds=5)

    assert not result["ok"], result
    reasons = [entry["reason"] for entry in result["redials"]]
    assert reasons[0] == "call_failed" and set(reasons[1:]) <= {"redial_failed"}, reasons
    assert all("503" in entry["error"] for entry in result["redials"] if "error" in entry), result["redials"]
