"""TLS for the agent link (proto/voicemesh/agent/v1/agent.proto over gRPC): the agent serves with a
server certificate and, for mutual TLS, requires a client certificate from a given CA; the transceiver
checks the agent's certificate against a CA and may present its own.

gRPC checks the agent's certificate against the host of the target the transceiver dials ("host:port",
from --agent or the agent's registry record), so the certificate's subjectAltName must hold that name or
IP address.
"""

from __future__ import annotations

import grpc


def _read(path: str) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as fh:
        return fh.read()


def client_credentials(ca: str, cert: str = "", key: str = "") -> grpc.ChannelCredentials:
    """Channel credentials for a transceiver: trust the agents' certificates signed by the PEM CA file
    ``ca``, and present the PEM ``cert`` with its ``key`` if given (both or neither). Raises OSError,
    ValueError."""
    if bool(cert) != bool(key):
        raise ValueError("an agent link client certificate needs its key, and a key its certificate")
    return grpc.ssl_channel_credentials(root_certificates=_read(ca), private_key=_read(key),
                                        certificate_chain=_read(cert))


def server_credentials(cert: str, key: str, client_ca: str = "") -> grpc.ServerCredentials:
    """Server credentials for an agent: the PEM ``cert`` and ``key`` files; with ``client_ca`` (a PEM CA
    file), every client must present a certificate that CA signed (mutual TLS), else the handshake fails.
    Raises OSError, ValueError."""
    if not cert or not key:
        raise ValueError("an agent served over TLS needs a certificate and its key")
    with open(key, "rb") as key_file, open(cert, "rb") as cert_file:
        pair = (key_file.read(), cert_file.read())
    ca = _read(client_ca)
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)
