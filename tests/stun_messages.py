"""STUN Binding messages built with aioice, for tests that send them to the relay over UDP or TCP."""

from __future__ import annotations

from aioice import stun as aioice_stun


def binding(message_class, username: str | None = None, transaction_id: bytes | None = None) -> bytes:
    """A Binding message of ``message_class`` (RFC 8489 §3), with USERNAME and PRIORITY when ``username`` is
    given, a MESSAGE-INTEGRITY under a dummy 22-character pwd and a FINGERPRINT."""
    kwargs = {"transaction_id": transaction_id} if transaction_id else {}
    msg = aioice_stun.Message(aioice_stun.Method.BINDING, message_class, **kwargs)
    if username:
        msg.attributes["USERNAME"] = username
        msg.attributes["PRIORITY"] = 1
    msg.add_message_integrity(b"x" * 22)
    msg.add_fingerprint()
    return bytes(msg)
