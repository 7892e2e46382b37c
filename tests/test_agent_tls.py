"""The agent link over TLS on loopback: a real gRPC server with a certificate from a throwaway CA, the
transceiver's AgentLink checking it, and mutual TLS refusing a client without a certificate."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from voicemesh.agent import tls
from voicemesh.agent.v1 import agent_pb2
from voicemesh.app.pki import CertificateAuthority
from voicemesh.core.agent_link import AgentLink
from voicemesh.core.echo_agent import serve

pytestmark = pytest.mark.integration


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, str]:
    """Files of one CA: the agent's server certificate for 127.0.0.1 and a transceiver's client certificate;
    and of another CA the transceivers do not trust (``other_ca``)."""
    ca = CertificateAuthority()
    ca.save(tmp_path)
    server, server_key = ca.server(["127.0.0.1"]).write(tmp_path, "agent")
    client, client_key = ca.client("transceiver/eu/trx-1").write(tmp_path, "trx")
    other = CertificateAuthority("another CA")
    (tmp_path / "other").mkdir()
    other.save(tmp_path / "other")
    return {"ca": str(tmp_path / "ca.pem"), "server": str(server), "server_key": str(server_key),
            "client": str(client), "client_key": str(client_key), "other_ca": str(tmp_path / "other" / "ca.pem")}


async def echoed(link: AgentLink, deadline_s: float = 10.0) -> bool:
    """Whether a frame sent on one session of ``link`` comes back before the deadline (False on refusal)."""
    frames: list[bytes] = []
    session = link.open_session("s1", codec=agent_pb2.CODEC_OPUS, sample_rate_hz=48000,
                                on_frame=lambda payload, ts: frames.append(payload), on_end=lambda reason: None)
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not frames and loop.time() < end:
        session.send(b"opus", 0)
        await asyncio.sleep(0.05)
    return frames[:1] == [b"opus"]


async def linked(port: int, credentials) -> AgentLink:
    link = AgentLink(f"127.0.0.1:{port}", credentials=credentials, give_up_s=60)
    await link.start()
    return link


async def test_echo_over_tls(pki) -> None:
    server, port = await serve("127.0.0.1:0", credentials=tls.server_credentials(pki["server"], pki["server_key"]))
    link = await linked(port, tls.client_credentials(pki["ca"]))
    try:
        assert await echoed(link)
    finally:
        await link.close()
        await server.stop(None)


async def test_a_plaintext_link_gets_nothing_from_a_tls_agent(pki) -> None:
    server, port = await serve("127.0.0.1:0", credentials=tls.server_credentials(pki["server"], pki["server_key"]))
    link = await linked(port, None)
    try:
        assert not await echoed(link, deadline_s=2.0)
        assert not link.connected
    finally:
        await link.close()
        await server.stop(None)


async def test_an_agent_whose_certificate_another_ca_signed_is_refused(pki) -> None:
    server, port = await serve("127.0.0.1:0", credentials=tls.server_credentials(pki["server"], pki["server_key"]))
    link = await linked(port, tls.client_credentials(pki["other_ca"]))
    try:
        assert not await echoed(link, deadline_s=2.0)
    finally:
        await link.close()
        await server.stop(None)


async def test_mutual_tls_refuses_a_client_without_a_certificate(pki) -> None:
    credentials = tls.server_credentials(pki["server"], pki["server_key"], client_ca=pki["ca"])
    server, port = await serve("127.0.0.1:0", credentials=credentials)
    anonymous = await linked(port, tls.client_credentials(pki["ca"]))
    known = await linked(port, tls.client_credentials(pki["ca"], pki["client"], pki["client_key"]))
    try:
        assert await echoed(known)
        assert not await echoed(anonymous, deadline_s=2.0)
        assert not anonymous.connected
    finally:
        await anonymous.close()
        await known.close()
        await server.stop(None)


def test_half_given_tls_files_are_refused(pki) -> None:
    with pytest.raises(ValueError, match="needs its key"):
        tls.client_credentials(pki["ca"], cert=pki["client"])
    with pytest.raises(ValueError, match="certificate and its key"):
        tls.server_credentials(pki["server"], "")
