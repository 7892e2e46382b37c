"""voicemesh: a global relay mesh for real-time voice AI.

Layers, each importing only those below it (checked by import-linter in ``make test``):

- ``voicemesh.app``: the command line, the test client, the embedded demo mesh and the netns lab;
  the only place that wires parts together;
- ``voicemesh.edge`` and ``voicemesh.core``: the edge PoP and the transceiver, which never import each other;
- ``voicemesh.agent``: the agent protocol and SDK;
- ``voicemesh.registry``: node membership and session claims;
- ``voicemesh.runtime``: asyncio, HTTP, UDP, logs, config and telemetry plumbing;
- ``voicemesh.wire``: the contracts on the wire, standard library only.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("voicemesh")
except PackageNotFoundError:
    __version__ = "0+unknown"
