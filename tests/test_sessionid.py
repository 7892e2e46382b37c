"""Session ids that every edge recognises as this mesh's, without state (voicemesh/wire/sessionid.py)."""

from __future__ import annotations

import secrets

import pytest

from voicemesh.wire.meshkeys import MeshKeys
from voicemesh.wire.sessionid import ID_LENGTH, RANDOM_BYTES, SessionIds

pytestmark = pytest.mark.unit

KEYS = MeshKeys({1: b"k" * 32}, 1)


def test_a_minted_id_is_recognised_and_fits_a_url_and_a_registry_key() -> None:
    ids = SessionIds(KEYS)
    session_id = ids.mint(secrets.token_bytes(RANDOM_BYTES))
    assert len(session_id) == ID_LENGTH and ids.issued(session_id)
    assert set(session_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_ids_not_minted_with_the_mesh_keys_are_not_recognised() -> None:
    ids = SessionIds(KEYS)
    session_id = ids.mint(bytes(RANDOM_BYTES))
    flipped = session_id[:5] + ("B" if session_id[5] != "B" else "C") + session_id[6:]
    foreign = SessionIds(MeshKeys({1: b"o" * 32}, 1)).mint(bytes(RANDOM_BYTES))
    for bad in (flipped, foreign, session_id[:-1], session_id + "A", "", "é" * ID_LENGTH, "*" * ID_LENGTH,
                secrets.token_urlsafe(27)):
        assert not ids.issued(bad), bad


def test_ids_outlive_a_key_rotation() -> None:
    before = SessionIds(KEYS).mint(bytes(RANDOM_BYTES))
    rotated = SessionIds(MeshKeys({2: b"n" * 32, 1: b"k" * 32}, 2))
    assert rotated.issued(before) and rotated.issued(rotated.mint(bytes(RANDOM_BYTES)))
    with pytest.raises(ValueError):
        rotated.mint(b"short")
