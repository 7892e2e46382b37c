"""Tests for edge.token: minting and verifying routing tokens carried as the server ICE ufrag."""

import base64

import pytest
from aioice.ice import validate_username

from voicemesh.wire.token import UFRAG_LENGTH, BadToken, RoutingToken, TokenCodec

pytestmark = pytest.mark.unit

KEY_0 = bytes.fromhex("00112233445566778899aabbccddeeff")
KEY_1 = bytes.fromhex("ffeeddccbbaa99887766554433221100")
NOW = 1_800_000_000
FIELDS = dict(region=3, transceiver=513, nonce=0xC0FFEE, issued_at=NOW - 10, lifetime_s=3600)


def reason(codec: TokenCodec, ufrag, now: float = NOW) -> str:
    with pytest.raises(BadToken) as caught:
        codec.verify(ufrag, now)
    return caught.value.reason


def test_round_trip_from_str_and_from_stun_bytes():
    codec = TokenCodec({0: KEY_0}, current_key_id=0)

    ufrag = codec.mint(**FIELDS)

    expected = RoutingToken(key_id=0, region=3, transceiver=513, nonce=0xC0FFEE, issued_at=NOW - 10,
                            expires_at=NOW + 3590)
    assert len(ufrag) == UFRAG_LENGTH == 36
    assert codec.verify(ufrag, NOW) == expected
    assert codec.verify(ufrag.encode(), NOW) == expected


def test_field_extremes_round_trip():
    codec = TokenCodec({255: KEY_0}, current_key_id=255)
    ufrag = codec.mint(region=255, transceiver=65535, nonce=2**32 - 1, issued_at=2**32 - 2, lifetime_s=1)

    assert codec.verify(ufrag, NOW) == RoutingToken(255, 255, 65535, 2**32 - 1, 2**32 - 2, 2**32 - 1)


def test_every_minted_ufrag_is_a_valid_ice_ufrag_and_unique_per_nonce():
    codec = TokenCodec({0: KEY_0}, current_key_id=0)

    ufrags = {codec.mint(region=1, transceiver=7, nonce=nonce, issued_at=NOW, lifetime_s=60) for nonce in range(2000)}

    assert len(ufrags) == 2000
    for ufrag in ufrags:
        validate_username(ufrag)  # aioice 0.13.0: raises ValueError unless 4..256 of [a-zA-Z0-9+/]


def test_forged_mac_is_rejected():
    codec = TokenCodec({0: KEY_0}, current_key_id=0)
    raw = bytearray(base64.b64decode(codec.mint(**FIELDS)))
    raw[2:4] = (514).to_bytes(2, "big")  # steer to another transceiver, keep the old MAC

    assert reason(codec, base64.b64encode(raw).decode()) == "mac"


def test_token_from_another_mesh_key_is_rejected():
    ours = TokenCodec({0: KEY_0}, current_key_id=0)
    theirs = TokenCodec({0: KEY_1}, current_key_id=0)

    assert reason(ours, theirs.mint(**FIELDS)) == "mac"


def test_previous_key_is_still_accepted_after_rotation():
    before = TokenCodec({0: KEY_0}, current_key_id=0)
    after = TokenCodec({1: KEY_1, 0: KEY_0}, current_key_id=1)
    old_ufrag = before.mint(**FIELDS)
    new_ufrag = after.mint(**FIELDS)

    assert after.verify(old_ufrag, NOW).key_id == 0
    assert after.verify(new_ufrag, NOW).key_id == 1
    assert reason(before, new_ufrag) == "unknown_key"


def test_retired_key_id_is_unknown():
    retired = TokenCodec({0: KEY_0}, current_key_id=0)
    current = TokenCodec({2: KEY_1, 1: KEY_1}, current_key_id=2)

    assert reason(current, retired.mint(**FIELDS)) == "unknown_key"


def test_expired_at_and_after_expires_at():
    codec = TokenCodec({0: KEY_0}, current_key_id=0)
    ufrag = codec.mint(region=0, transceiver=0, nonce=1, issued_at=NOW - 60, lifetime_s=60)

    assert codec.verify(ufrag, NOW - 0.5).expires_at == NOW
    assert reason(codec, ufrag, now=NOW) == "expired"
    assert reason(codec, ufrag, now=NOW + 1) == "expired"


@pytest.mark.parametrize("bad", ["-", "=", "_", " ", "é"])
def test_characters_outside_the_ice_alphabet(bad):
    codec = TokenCodec({0: KEY_0}, current_key_id=0)
    ufrag = codec.mint(**FIELDS)

    assert reason(codec, ufrag[:-1] + bad) == "alphabet"


def test_padding_is_not_accepted():
    codec = TokenCodec({0: KEY_0}, current_key_id=0)

    assert reason(codec, codec.mint(**FIELDS)[:-2] + "==") == "alphabet"


@pytest.mark.parametrize("length", [0, 4, 28, 35, 37, 256])
def test_wrong_length(length):
    codec = TokenCodec({0: KEY_0}, current_key_id=0)
    ufrag = (codec.mint(**FIELDS) * 10)[:length]

    assert reason(codec, ufrag) == "length"


def test_an_ordinary_random_ufrag_is_not_a_token():
    codec = TokenCodec({0: KEY_0}, current_key_id=0)

    assert reason(codec, b"h6vY") == "length"
    assert reason(codec, b"A" * 36) == "mac"


@pytest.mark.parametrize(
    "field, value",
    [("region", 256), ("transceiver", 65536), ("nonce", 2**32), ("issued_at", -1), ("issued_at", 2**32),
     ("lifetime_s", -1), ("lifetime_s", 2**32 - NOW + 10)],
)
def test_mint_rejects_fields_that_do_not_fit(field, value):
    codec = TokenCodec({0: KEY_0}, current_key_id=0)

    with pytest.raises(ValueError, match=field):
        codec.mint(**{**FIELDS, field: value})


def test_bad_key_sets():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        TokenCodec({0: b"short"}, current_key_id=0)
    with pytest.raises(ValueError, match="current key id 1"):
        TokenCodec({0: KEY_0}, current_key_id=1)
    with pytest.raises(ValueError, match="key id"):
        TokenCodec({256: KEY_0}, current_key_id=256)


def test_from_spec_first_entry_is_the_current_key():
    codec = TokenCodec.from_spec(f"1:{KEY_1.hex()}, 0:{KEY_0.hex()}")
    previous = TokenCodec({0: KEY_0}, current_key_id=0)

    assert codec.current_key_id == 1
    assert codec.verify(codec.mint(**FIELDS), NOW).key_id == 1
    assert codec.verify(previous.mint(**FIELDS), NOW).key_id == 0


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "entry 1 must look like"),
        (f"{KEY_0.hex()}", "entry 1 must look like"),
        (f"one:{KEY_0.hex()}", "key id 'one' is not an integer"),
        (f"0:{KEY_0.hex()},0:{KEY_1.hex()}", "entry 2: key id 0 appears twice"),
        ("0:not-hex", "secret for key 0 is not hex"),
        ("0:abcd", "at least 16 bytes, got 2"),
        (f"300:{KEY_0.hex()}", "key id must be in 0..255"),
    ],
)
def test_from_spec_errors_name_the_entry_and_never_the_secret(spec, message):
    with pytest.raises(ValueError, match=message) as caught:
        TokenCodec.from_spec(spec)

    assert KEY_0.hex() not in str(caught.value)
