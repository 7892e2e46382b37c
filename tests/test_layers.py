"""The import layers hold, and the check that guards them fails on a violation (tools/layers.py)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parent.parent


def load_layers():
    spec = importlib.util.spec_from_file_location("layers", REPO / "tools" / "layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the source tree the check reads: the packages and pyproject.toml."""
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("voicemesh", "edge", "core", "registry"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    return tmp_path


def add_import(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_this_tree_keeps_its_layers(tree: Path) -> None:
    assert load_layers().check(tree) == 0


@pytest.mark.parametrize("file, line", [
    ("edge/relay.py", "from voicemesh.core import mux_core"),
    ("core/mux.py", "from voicemesh.edge import relay_core"),
    ("registry/base.py", "from voicemesh.runtime import telemetry"),
    ("voicemesh/wire/frame.py", "from voicemesh.registry import NodeRecord"),
    ("voicemesh/wire/stun.py", "import aiohttp"),
    ("edge/geodns.py", "import aiortc"),
    ("voicemesh/runtime/http.py", "from voicemesh.app import cli"),
])
def test_an_import_across_the_layers_fails_the_check(tree: Path, file: str, line: str) -> None:
    add_import(tree / file, line)
    assert load_layers().check(tree) == 1
