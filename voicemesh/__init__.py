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

import os
from importlib.metadata import PackageNotFoundError, version

GRPC_EXPERIMENTS = "-event_engine_client,-event_engine_listener,-event_engine_for_all_other_endpoints"
"""gRPC core's experiments every voicemesh process runs with, unless GRPC_EXPERIMENTS is already set
in its environment (any value, even empty, is kept: that is the operator's way back to gRPC's own
defaults). These three turn off gRPC's EventEngine for client and server TCP connections, so the
thread that waits on grpc.aio's completion queue reads the socket itself (gRPC's epoll1 polling
engine) instead of an EventEngine thread that then wakes it: per message received on a grpc.aio
stream (the agent link, ~100 messages/s each way), two thread wake-ups fewer. gRPC reads the
variable once, when ``grpc`` is first imported, so it is set here, before any voicemesh module
imports it; child processes inherit it. Checked against grpcio 1.85.1 (pinned): an experiment name
a later gRPC no longer knows is logged and ignored by gRPC, not an error."""
os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)

try:
    __version__ = version("voicemesh")
except PackageNotFoundError:
    __version__ = "0+unknown"
