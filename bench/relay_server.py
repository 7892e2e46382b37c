"""The edge Relay alone in its own process, for the relay benchmark: fixed token key, one transceiver
(region 1, index 1) at a given backbone address, no registry, under uvloop.

usage: relay_server.py KEY_HEX TRANSCEIVER_HOST:PORT [tcp]
With ``tcp`` it also serves ICE-TCP (edge/relay_tcp.py) on a port of its own. It prints one JSON line
{"public": [host, port], "backbone": [host, port], "tcp": [host, port] or null} once the sockets are read,
and on SIGTERM prints Relay.stats() as one JSON line and exits.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import uvloop

from voicemesh.edge.relay import Relay
from voicemesh.edge.relay_tcp import TcpRelay, bind_tcp
from voicemesh.runtime.udp import bind_udp
from voicemesh.wire.addr import parse_hostport
from voicemesh.wire.token import TokenCodec

PUBLIC_HOST = "127.0.0.1"
BACKBONE_HOST = "127.0.0.3"
EDGE_ID = 1
TRANSCEIVER = (1, 1)


async def serve(key: bytes, transceiver: tuple[str, int], tcp: bool) -> None:
    relay = Relay(bind_udp(PUBLIC_HOST, 0), bind_udp(BACKBONE_HOST, 0, reuse_port=True), EDGE_ID, TokenCodec({1: key}, 1))
    relay.directory = {TRANSCEIVER: transceiver}
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    relay.start()
    listener = TcpRelay(relay, bind_tcp(PUBLIC_HOST, 0)) if tcp else None
    if listener is not None:
        await listener.start()
    print(json.dumps({"public": relay.public_address, "backbone": relay.backbone_address,
                      "tcp": listener.address if listener is not None else None}), flush=True)
    try:
        await stop
    finally:
        print(json.dumps(relay.stats()), flush=True)
        if listener is not None:
            listener.close()
        relay.close()


def main() -> None:
    key_hex, transceiver, *mode = sys.argv[1:]
    uvloop.run(serve(bytes.fromhex(key_hex), parse_hostport(transceiver), mode == ["tcp"]))


if __name__ == "__main__":
    main()
