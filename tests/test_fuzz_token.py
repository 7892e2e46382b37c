"""Fuzzing the routing token (voicemesh/wire/token.py) with hypothesis: TokenCodec.verify on arbitrary text
and bytes and on mutated tokens returns normally or raises BadToken, and only an unmodified token verifies."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicemesh.wire.token import UFRAG_LENGTH, BadToken, TokenCodec

pytestmark = pytest.mark.unit

CODEC = TokenCodec({1: b"k" * 32, 0: b"o" * 32}, current_key_id=1)
NOW = 1_800_000_000
ICE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

fields = st.fixed_dictionaries({"region": st.integers(0, 0xFF), "transceiver": st.integers(0, 0xFFFF),
                                "nonce": st.integers(0, 0xFFFF_FFFF), "issued_at": st.integers(0, 0x7FFF_FFFF),
                                "lifetime_s": st.integers(0, 0x7FFF_FFFF)})
tokens = fields.map(lambda f: CODEC.mint(**f))


@st.composite
def mutated_tokens(draw) -> str:
    token = list(draw(tokens))
    for _ in range(draw(st.integers(1, 3))):
        token[draw(st.integers(0, UFRAG_LENGTH - 1))] = draw(st.sampled_from(ICE_CHARS + "=-_ é\x00"))
    return "".join(token)


ufrags = st.one_of(st.text(max_size=40), st.binary(max_size=40),
                   st.text(ICE_CHARS + "=", min_size=UFRAG_LENGTH, max_size=UFRAG_LENGTH),
                   tokens, mutated_tokens(), tokens.map(str.encode))


@given(ufrags, st.floats(allow_nan=True, allow_infinity=True))
def test_verify_raises_only_bad_token(ufrag, now):
    try:
        token = CODEC.verify(ufrag, now)
    except BadToken as exc:
        assert exc.reason in {"length", "alphabet", "unknown_key", "mac", "expired"}
        return
    text = ufrag.decode() if isinstance(ufrag, bytes) else ufrag
    assert CODEC.mint(region=token.region, transceiver=token.transceiver, nonce=token.nonce, issued_at=token.issued_at,
                      lifetime_s=token.expires_at - token.issued_at) == text  # only a minted token verifies


@given(fields)
def test_minted_tokens_verify_to_their_fields_until_they_expire(f):
    ufrag = CODEC.mint(**f)
    assert len(ufrag) == UFRAG_LENGTH and set(ufrag) <= set(ICE_CHARS)
    assert base64.b64decode(ufrag)[0] == 1
    expires_at = f["issued_at"] + f["lifetime_s"]
    if expires_at > NOW:
        token = CODEC.verify(ufrag, NOW)
        assert (token.region, token.transceiver, token.nonce, token.issued_at, token.expires_at) == (
            f["region"], f["transceiver"], f["nonce"], f["issued_at"], expires_at)
    else:
        with pytest.raises(BadToken, match="expired"):
            CODEC.verify(ufrag, NOW)
