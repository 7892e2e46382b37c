"""Tests for voicemesh.wire.hopauth (the signature an edge puts on its requests to a transceiver), with
voicemesh.wire.meshkeys (the key set it derives from) and voicemesh.wire.replay (the memory of used ones)."""

import hmac
from dataclasses import replace

import pytest

from voicemesh.wire.hopauth import WINDOW_S, BadSignature, HopRequest, HopSigner, HopVerifier
from voicemesh.wire.meshkeys import MeshKeys
from voicemesh.wire.replay import ReplayCache, ReplayCacheFull

pytestmark = pytest.mark.unit

KEYS = MeshKeys({1: b"\x01" * 32}, 1)
NOW = 1_800_000_000
OFFER = HopRequest.from_headers("post", "/v1/sessions", "trx-1", b"v=0\r\n...", {
    "Voicemesh-Edge-Id": "7", "Voicemesh-Relay-Address": "203.0.113.5:3478", "Voicemesh-Client-Address": "198.51.100.9"})


def reason(verifier: HopVerifier, value: str | None, request: HopRequest = OFFER, now: float = NOW) -> str:
    with pytest.raises(BadSignature) as caught:
        verifier.verify(value, request, now)
    return caught.value.reason


def test_a_signed_request_verifies_once() -> None:
    verifier = HopVerifier(KEYS)
    value = HopSigner(KEYS).sign(OFFER, NOW)

    assert value.startswith(f"t={NOW},k=1,v1=")
    assert verifier.verify(value, OFFER, NOW + 1) == 1
    assert reason(verifier, value, now=NOW + 2) == "replayed"


def test_the_header_names_are_read_case_insensitively_on_the_transceiver() -> None:
    from multidict import CIMultiDict

    headers = CIMultiDict({"voicemesh-edge-id": "7", "VOICEMESH-RELAY-ADDRESS": "203.0.113.5:3478",
                           "Voicemesh-Client-Address": "198.51.100.9"})
    seen = HopRequest.from_headers("POST", "/v1/sessions", "trx-1", b"v=0\r\n...", headers)
    assert seen == OFFER


@pytest.mark.parametrize("change", [
    {"method": "DELETE"}, {"path": "/v1/sessions?x=1"}, {"transceiver": "trx-2"}, {"body": b"v=1\r\n..."},
    {"edge_id": "8"}, {"relay_address": "192.0.2.1:3478"}, {"client_address": "192.0.2.99"}, {"client_address": ""},
    {"relay_tcp_address": "203.0.113.5:443"},
])
def test_each_covered_field_changed_breaks_the_mac(change: dict) -> None:
    value = HopSigner(KEYS).sign(OFFER, NOW)

    assert reason(HopVerifier(KEYS), value, replace(OFFER, **change)) == "mac"


def test_the_ice_tcp_address_is_signed_and_its_absence_signs_as_before() -> None:
    with_tcp = replace(OFFER, relay_tcp_address="203.0.113.5:443")
    value = HopSigner(KEYS).sign(with_tcp, NOW)

    assert reason(HopVerifier(KEYS), value, replace(with_tcp, relay_tcp_address="203.0.113.6:443")) == "mac"
    assert reason(HopVerifier(KEYS), value, OFFER) == "mac", "stripping the header breaks the MAC"
    assert OFFER.canonical(NOW, 1).count(b"\n") == 9, "a request without it has the fields it always had"
    assert HopRequest.from_headers("POST", "/v1/sessions", "trx-1", OFFER.body, {
        "Voicemesh-Edge-Id": "7", "Voicemesh-Relay-Address": "203.0.113.5:3478",
        "Voicemesh-Client-Address": "198.51.100.9", "Voicemesh-Relay-Tcp-Address": "203.0.113.5:443"}) == with_tcp


def test_outside_the_window_is_stale_both_ways() -> None:
    verifier = HopVerifier(KEYS)
    signer = HopSigner(KEYS)

    assert reason(verifier, signer.sign(OFFER, NOW - WINDOW_S - 1)) == "stale"
    assert reason(verifier, signer.sign(OFFER, NOW + WINDOW_S + 1)) == "stale"
    assert verifier.verify(signer.sign(OFFER, NOW - WINDOW_S), OFFER, NOW) == 1


def test_a_replay_at_the_window_edge_is_still_refused() -> None:
    verifier = HopVerifier(KEYS)
    value = HopSigner(KEYS).sign(OFFER, NOW)
    verifier.verify(value, OFFER, NOW)

    assert reason(verifier, value, now=NOW + WINDOW_S) == "replayed"
    assert reason(verifier, value, now=NOW + WINDOW_S + 1) == "stale"


@pytest.mark.parametrize("value, expected", [
    (None, "missing"), ("", "malformed"), ("t=1,k=1", "malformed"), ("v1=00,t=1,k=1", "malformed"),
    (f"t={NOW},k=1,v1=" + "A" * 64, "malformed"), (f"t={NOW},k=9,v1=" + "0" * 64, "unknown_key"),
    (f"t={NOW},k=1,v1=" + "0" * 64, "mac"),
])
def test_bad_values(value: str | None, expected: str) -> None:
    assert reason(HopVerifier(KEYS), value) == expected


def test_rotation_accepts_the_previous_key() -> None:
    rotated = MeshKeys({2: b"\x02" * 32, 1: b"\x01" * 32}, 2)
    old, new = HopSigner(KEYS).sign(OFFER, NOW), HopSigner(rotated).sign(OFFER, NOW)

    assert new.split(",")[1] == "k=2"
    assert HopVerifier(rotated).verify(old, OFFER, NOW) == 1
    assert reason(HopVerifier(KEYS), new) == "unknown_key"


def test_the_hop_key_is_not_the_mesh_key() -> None:
    canonical = OFFER.canonical(NOW, 1)
    raw = hmac.new(KEYS.keys[1], canonical, "sha256").hexdigest()

    assert reason(HopVerifier(KEYS), f"t={NOW},k=1,v1={raw}") == "mac"


def test_a_full_replay_memory_refuses_rather_than_forgets() -> None:
    verifier = HopVerifier(KEYS, capacity=1)
    signer = HopSigner(KEYS)
    verifier.verify(signer.sign(OFFER, NOW), OFFER, NOW)

    other = replace(OFFER, body=b"other")
    assert reason(verifier, signer.sign(other, NOW), other) == "busy"
    later = NOW + WINDOW_S + 1  # the first signature is stale now, so it is forgotten
    assert verifier.verify(signer.sign(other, later), other, later) == 1


def test_replay_cache_forgets_values_at_their_expiry() -> None:
    cache = ReplayCache(capacity=2)

    assert cache.remember(b"a", 10, now=0) and cache.remember(b"b", 20, now=0)
    assert not cache.remember(b"a", 10, now=9.9)
    with pytest.raises(ReplayCacheFull):
        cache.remember(b"c", 30, now=9.9)
    assert cache.remember(b"c", 30, now=10) and len(cache) == 2
    assert cache.remember(b"a", 40, now=20)  # b expired: room again, and a is new once more


def test_mesh_key_spec_errors_name_the_entry_never_the_secret() -> None:
    keys = MeshKeys.from_spec(f"2:{'ab' * 16}, 1:{'cd' * 16}")
    assert (keys.current_key_id, sorted(keys.keys)) == (2, [1, 2])
    for spec, message in [("2", "entry 1"), ("x:00", "not an integer"), (f"1:{'ab' * 16},1:{'ab' * 16}", "twice"),
                          ("1:zz", "not hex"), ("1:abcd", "at least 16 bytes"), (f"300:{'ab' * 16}", "0..255")]:
        with pytest.raises(ValueError, match=message) as caught:
            MeshKeys.from_spec(spec)
        assert "ab" * 16 not in str(caught.value)


def test_derived_keys_differ_by_purpose_and_keep_ids() -> None:
    hop, client = KEYS.derive(b"hop"), KEYS.derive(b"client-token")

    assert hop.keys.keys() == client.keys.keys() == {1} and hop.current_key_id == 1
    assert len({hop.keys[1], client.keys[1], KEYS.keys[1]}) == 3
