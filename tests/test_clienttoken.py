"""Tests for voicemesh.wire.clienttoken: issuing and verifying client tokens, the WHIP bearer a browser gets
from an app's backend."""

import base64
import hmac
import re

import pytest

from voicemesh.wire.clienttoken import MAX_TTL_S, PREFIX, BadClientToken, ClientToken, ClientTokenCodec
from voicemesh.wire.meshkeys import MeshKeys

pytestmark = pytest.mark.unit

KEY_0 = bytes.fromhex("00112233445566778899aabbccddeeff")
KEY_1 = bytes.fromhex("ffeeddccbbaa99887766554433221100")
NOW = 1_800_000_000
NONCE = bytes(range(16))
CODEC = ClientTokenCodec(MeshKeys({0: KEY_0}, 0))


def reason(codec: ClientTokenCodec, value: str, now: float | None = NOW, origin: str | None = None,
           region: str | None = None) -> str:
    with pytest.raises(BadClientToken) as caught:
        codec.verify(value, now=now, origin=origin, region=region)
    return caught.value.reason


def test_issue_then_verify_returns_the_fields() -> None:
    value, expires_at = CODEC.issue(now=NOW + 0.7, ttl_s=30, nonce=NONCE, origin="https://App.example.com/",
                                    region="eu-west")

    assert expires_at == NOW + 30
    assert CODEC.verify(value, now=NOW + 29.9, origin="https://app.example.com", region=None) == ClientToken(
        key_id=0, expires_at=NOW + 30, nonce=NONCE, origin="https://app.example.com", region="eu-west")


def test_the_value_is_an_rfc6750_b64token_and_each_nonce_gives_another() -> None:
    first, _ = CODEC.issue(now=NOW, ttl_s=60, nonce=NONCE)
    second, _ = CODEC.issue(now=NOW, ttl_s=60, nonce=bytes(16))

    assert first.startswith(PREFIX) and first != second
    assert re.fullmatch(r"[A-Za-z0-9\-._~+/]+=*", first)


def test_an_unbound_token_takes_any_origin_and_region() -> None:
    value, _ = CODEC.issue(now=NOW, ttl_s=10, nonce=NONCE)

    token = CODEC.verify(value, now=NOW, origin="https://elsewhere.example", region="ap-south")
    assert (token.origin, token.region) == ("", "")


def test_expired_at_its_expiry_and_after() -> None:
    value, expires_at = CODEC.issue(now=NOW, ttl_s=5, nonce=NONCE)

    assert CODEC.verify(value, now=expires_at - 0.001, origin=None, region=None).expires_at == expires_at
    assert reason(CODEC, value, now=expires_at) == "expired"
    assert reason(CODEC, value, now=expires_at + 3600) == "expired"


def test_without_a_time_expiry_is_not_checked() -> None:
    value, _ = CODEC.issue(now=NOW, ttl_s=5, nonce=NONCE)

    assert CODEC.verify(value, now=None, origin=None, region=None).nonce == NONCE


def test_another_mesh_key_is_refused() -> None:
    theirs = ClientTokenCodec(MeshKeys({0: KEY_1}, 0))
    value, _ = theirs.issue(now=NOW, ttl_s=10, nonce=NONCE)

    assert reason(CODEC, value) == "mac"


def test_a_routing_token_key_never_makes_a_client_token() -> None:
    """The client token's key is derived from the mesh key: a MAC made with the raw mesh key does not verify."""
    body = bytes([0]) + (NOW + 10).to_bytes(4, "big") + NONCE + b"\x00\x00"
    mac = hmac.digest(KEY_0, body, "sha256")[:16]
    forged = PREFIX + base64.urlsafe_b64encode(body + mac).decode().rstrip("=")
    assert reason(CODEC, forged) == "mac"


def test_rotation_accepts_the_previous_key_and_refuses_a_retired_one() -> None:
    before = ClientTokenCodec(MeshKeys({1: KEY_0}, 1))
    during = ClientTokenCodec(MeshKeys({2: KEY_1, 1: KEY_0}, 2))
    after = ClientTokenCodec(MeshKeys({2: KEY_1}, 2))
    old, _ = before.issue(now=NOW, ttl_s=60, nonce=NONCE)
    new, _ = during.issue(now=NOW, ttl_s=60, nonce=NONCE)

    assert during.verify(old, now=NOW, origin=None, region=None).key_id == 1
    assert after.verify(new, now=NOW, origin=None, region=None).key_id == 2
    assert reason(after, old) == "unknown_key"


def test_origin_binding_refuses_another_or_no_origin() -> None:
    value, _ = CODEC.issue(now=NOW, ttl_s=10, nonce=NONCE, origin="https://app.example.com")

    assert CODEC.verify(value, now=NOW, origin="HTTPS://APP.EXAMPLE.COM", region=None).origin == "https://app.example.com"
    assert reason(CODEC, value, origin="https://evil.example") == "origin"
    assert reason(CODEC, value, origin="https://app.example.com:8443") == "origin"
    assert reason(CODEC, value, origin=None) == "origin"


def test_region_binding_refuses_a_request_pinned_elsewhere() -> None:
    value, _ = CODEC.issue(now=NOW, ttl_s=10, nonce=NONCE, region="eu-west")

    assert CODEC.verify(value, now=NOW, origin=None, region="eu-west").region == "eu-west"
    assert CODEC.verify(value, now=NOW, origin=None, region=None).region == "eu-west"
    assert reason(CODEC, value, region="us-east") == "region"


def test_any_changed_byte_breaks_the_mac() -> None:
    value, _ = CODEC.issue(now=NOW, ttl_s=10, nonce=NONCE, origin="https://app.example.com", region="eu")
    encoded = value[len(PREFIX):]
    raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    for i in range(1, len(raw)):
        tampered = bytearray(raw)
        tampered[i] ^= 0x01
        forged = PREFIX + base64.urlsafe_b64encode(bytes(tampered)).decode().rstrip("=")
        assert reason(CODEC, forged, origin="https://app.example.com") in ("mac", "format")


@pytest.mark.parametrize("value", ["", "Bearer", PREFIX, PREFIX + "AAAA", PREFIX + "a+b/", PREFIX + "!" * 40,
                                   "vmct2_" + "A" * 60, PREFIX + "A" * 2000, "s3cret-api-key-s3cret"])
def test_malformed_values_are_format_errors(value: str) -> None:
    assert reason(CODEC, value) == "format"


@pytest.mark.parametrize("fields, message", [
    ({"ttl_s": 0}, "ttl_s"), ({"ttl_s": MAX_TTL_S + 1}, "ttl_s"), ({"nonce": b"short"}, "nonce"),
    ({"origin": "app.example.com"}, "origin"), ({"origin": "https://app.example.com/path"}, "origin"),
    ({"origin": "null"}, "origin"), ({"region": "eu west"}, "region"), ({"region": "r" * 64}, "region"),
])
def test_issue_refuses_fields_out_of_range(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CODEC.issue(**{"now": NOW, "ttl_s": 10, "nonce": NONCE} | fields)
