"""The deploy's files as the tests read them: paths, the topology, HCL, and deploy/voicemesh-prepare as a module."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import hcl2
from hcl2.utils import SerializationOptions

ROOT = Path(__file__).resolve().parents[1]
TERRAFORM = ROOT / "infra" / "terraform"
TOPOLOGY = json.loads((ROOT / "infra" / "topology.json").read_text())
PORTS = TOPOLOGY["ports"]
FACTS = {"private_ip": "10.65.0.10", "public_ip": "203.0.113.10", "instance_id": "i-0abc"}
"""The instance facts voicemesh-prepare substitutes, as a test host has them."""


def load_hcl(path: Path) -> dict[str, Any]:
    """A Terraform file as python-hcl2 reads it, with quotes stripped."""
    options = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
    with path.open() as fh:
        return hcl2.load(fh, serialization_options=options)


def _load_script(name: str) -> ModuleType:
    path = ROOT / "deploy" / name
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def load_prepare() -> ModuleType:
    """deploy/voicemesh-prepare (a script without .py) imported as a module."""
    return _load_script("voicemesh-prepare")


def load_registrar() -> ModuleType:
    """deploy/voicemesh-registrar imported as a module (it loads voicemesh-prepare beside it)."""
    return _load_script("voicemesh-registrar")


def load_etcd() -> ModuleType:
    """deploy/voicemesh-etcd (member rejoin, snapshots) imported as a module."""
    return _load_script("voicemesh-etcd")


def issue(tmp: Path, users: list[str], hosts: list[str], server: str = "") -> dict:
    """A node secret's value as the registrar makes it: ``voicemesh registry certs`` with the registrar's
    arguments (its /pki is ``tmp``), read back by the registrar."""
    from voicemesh.app.cli import main

    registrar = load_registrar()
    args = [str(tmp) if arg == "/pki" else arg for arg in registrar.certs_args(users, hosts)]
    assert main(args) == 0
    return registrar.read_bundle(str(tmp), users, server)
