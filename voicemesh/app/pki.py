"""A throwaway certificate authority for local runs, the tests and ``make attack``: a CA, server certificates
(etcd, agents) and client certificates whose common name is the etcd user (registry/auth.py).

Deployments issue their certificates from their own CA (infra/); this module only saves a local run from
hand-written openssl commands. Keys are ECDSA P-256, certificates X.509 v3 (RFC 5280), PEM-encoded.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)
"""How long every certificate issued here is valid (from one hour before issue, for clock skew)."""


@dataclass(frozen=True)
class Issued:
    """One certificate and its private key, both PEM bytes."""

    cert: bytes
    key: bytes

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """Write ``<name>.pem`` and ``<name>-key.pem`` (mode 0600) into ``directory``; return both paths."""
        cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
        cert.write_bytes(self.cert)
        key.touch(mode=0o600)
        key.write_bytes(self.key)
        return cert, key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CertificateAuthority:
    """A self-signed CA (``cert`` is its PEM certificate) that issues server and client certificates.

    ``CertificateAuthority()`` makes a new one; ``load`` reads one that ``save`` wrote.
    """

    def __init__(self, common_name: str = "voicemesh local CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(self._name).issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert = self._cert.public_bytes(serialization.Encoding.PEM)

    def save(self, directory: Path) -> None:
        """Write ``ca.pem`` and ``ca-key.pem`` (mode 0600) into ``directory``."""
        Issued(self.cert, _key_pem(self._key)).write(directory, "ca")

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        """The CA that ``save`` wrote into ``directory``. Raises OSError, ValueError."""
        ca = cls.__new__(cls)
        ca.cert = (directory / "ca.pem").read_bytes()
        ca._cert = x509.load_pem_x509_certificate(ca.cert)
        key = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{directory / 'ca-key.pem'}: not an EC private key")
        ca._key, ca._name = key, ca._cert.subject
        return ca

    def _issue(self, common_name: str, hosts: list[str], usages: list[x509.ObjectIdentifier]) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def server(self, hosts: list[str], common_name: str = "") -> Issued:
        """A server certificate for ``hosts`` (DNS names or IP addresses, in the subjectAltName), also usable
        as a client certificate (etcd members use theirs both ways)."""
        return self._issue(common_name or hosts[0], hosts, [ExtendedKeyUsageOID.SERVER_AUTH,
                                                            ExtendedKeyUsageOID.CLIENT_AUTH])

    def client(self, common_name: str) -> Issued:
        """A client certificate whose subject common name is ``common_name`` (etcd's user name)."""
        return self._issue(common_name, [], [ExtendedKeyUsageOID.CLIENT_AUTH])
