"""A minimal TURN client for the relay benchmark: one UDP allocation with long-term credentials, a
permission and a channel to one peer (RFC 8656), so the load generator can then send ChannelData to coturn."""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct

from voicemesh.wire import stun

ALLOCATE = 0x0003
CREATE_PERMISSION = 0x0008
CHANNEL_BIND = 0x0009
SUCCESS = 0x0100
ERROR = 0x0110
CHANNEL_NUMBER = 0x000C
XOR_PEER_ADDRESS = 0x0012
REALM = 0x0014
NONCE = 0x0015
REQUESTED_TRANSPORT = 0x0019
ERROR_CODE = 0x0009
UDP = 17


class TurnError(ValueError):
    """The TURN server refused or did not answer. `reason` is a counter label: "timeout", "error_<code>"
    (the STUN ERROR-CODE, RFC 8489 section 14.8) or "unexpected"."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"TURN handshake failed: {reason} {detail}".strip())
        self.reason = reason


def attribute(attr_type: int, value: bytes) -> bytes:
    """One STUN attribute: type u16 | length u16 | value | zero padding to 4 bytes (RFC 8489 section 14)."""
    return struct.pack("!HH", attr_type, len(value)) + value + b"\0" * (-len(value) % 4)


def _xor_address(host: str, port: int) -> bytes:
    """XOR-PEER-ADDRESS value for an IPv4 address (RFC 8489 section 14.2)."""
    ip = int.from_bytes(socket.inet_aton(host), "big") ^ int.from_bytes(stun.MAGIC_COOKIE, "big")
    return struct.pack("!BBHI", 0, 1, port ^ 0x2112, ip)


def encode_request(method: int, attributes: bytes, key: bytes | None = None) -> tuple[bytes, bytes]:
    """Encode a STUN request (RFC 8489 section 5) with a random transaction id; with `key`, append
    MESSAGE-INTEGRITY (section 14.5). Returns (message, transaction id)."""
    txid = os.urandom(12)
    if key is None:
        return struct.pack("!HH", method, len(attributes)) + stun.MAGIC_COOKIE + txid + attributes, txid
    header = struct.pack("!HH", method, len(attributes) + 24) + stun.MAGIC_COOKIE + txid
    mac = hmac.digest(key, header + attributes, "sha1")
    return header + attributes + attribute(stun.MESSAGE_INTEGRITY, mac), txid


class TurnClient:
    """Long-term-credential TURN over a connected UDP socket (blocking, with a timeout in seconds).

    `channel_to(peer)` does Allocate (answered 401, then again with USERNAME, REALM, NONCE and
    MESSAGE-INTEGRITY keyed with MD5("user:realm:password"), RFC 8489 section 9.2), CreatePermission and
    ChannelBind (RFC 8656 sections 7, 9 and 11) and returns the channel number; from then on, datagrams
    on the socket framed as ChannelData (channel u16 | length u16 | data, RFC 8656 section 12.4) reach the
    peer. Raises TurnError.
    """

    def __init__(self, sock: socket.socket, username: str, password: str, timeout_s: float = 1.0) -> None:
        self.sock = sock
        self.username = username
        self.password = password
        self.timeout_s = timeout_s
        self._realm = b""
        self._nonce = b""
        self._key: bytes | None = None

    def _exchange(self, method: int, attributes: bytes, authenticated: bool) -> stun.StunMessage:
        if authenticated:
            attributes = (
                attribute(stun.USERNAME, self.username.encode())
                + attribute(REALM, self._realm)
                + attribute(NONCE, self._nonce)
                + attributes
            )
        message, txid = encode_request(method, attributes, self._key if authenticated else None)
        self.sock.settimeout(self.timeout_s)
        try:
            self.sock.send(message)
            while True:
                reply = stun.parse(self.sock.recv(2048))
                if reply.transaction_id == txid:
                    return reply
        except TimeoutError:
            raise TurnError("timeout") from None

    def _expect_success(self, method: int, reply: stun.StunMessage) -> None:
        if reply.message_type == method | SUCCESS:
            return
        if reply.message_type == method | ERROR:
            code = dict(reply.attributes).get(ERROR_CODE, b"\0\0\0\0")
            raise TurnError(f"error_{code[2] * 100 + code[3]}", code[4:].decode(errors="replace"))
        raise TurnError("unexpected", f"message type {reply.message_type:#06x}")

    def channel_to(self, peer: tuple[str, int], channel: int = 0x4000) -> int:
        """Allocate a UDP relay and bind `channel` (0x4000..0x7FFF) to the IPv4 `peer`; return the channel."""
        transport = attribute(REQUESTED_TRANSPORT, bytes([UDP, 0, 0, 0]))
        challenge = self._exchange(ALLOCATE, transport, authenticated=False)
        fields = dict(challenge.attributes)
        if challenge.message_type != ALLOCATE | ERROR or REALM not in fields or NONCE not in fields:
            self._expect_success(ALLOCATE, challenge)
            raise TurnError("unexpected", "Allocate without authentication was accepted")
        self._realm, self._nonce = fields[REALM], fields[NONCE]
        self._key = hashlib.md5(f"{self.username}:{self._realm.decode()}:{self.password}".encode()).digest()
        self._expect_success(ALLOCATE, self._exchange(ALLOCATE, transport, authenticated=True))
        peer_address = attribute(XOR_PEER_ADDRESS, _xor_address(*peer))
        self._expect_success(CREATE_PERMISSION, self._exchange(CREATE_PERMISSION, peer_address, authenticated=True))
        bind = attribute(CHANNEL_NUMBER, struct.pack("!HH", channel, 0)) + peer_address
        self._expect_success(CHANNEL_BIND, self._exchange(CHANNEL_BIND, bind, authenticated=True))
        return channel
