"""Tests for edge.stun against the RFC 5769 test vectors and malformed input."""

import hashlib
import random

import pytest

from voicemesh.wire import stun
from voicemesh.wire.stun import MalformedStun

pytestmark = pytest.mark.unit

# RFC 5769 section 2.1: Binding request, USERNAME "evtj:h6vY", password "VOkJxbRl1RmTxUk/WvJxBt".
SAMPLE_REQUEST = bytes.fromhex(
    "0001 0058 2112a442"  # Binding request, length 88, magic cookie
    "b7e7a701 bc34d686 fa87dfae"  # transaction id
    "8022 0010 5354554e 20746573 7420636c 69656e74"  # SOFTWARE "STUN test client"
    "0024 0004 6e0001ff"  # PRIORITY
    "8029 0008 932ff9b1 51263b36"  # ICE-CONTROLLED
    "0006 0009 6576746a 3a683676 59202020"  # USERNAME "evtj:h6vY" and 3 bytes of padding
    "0008 0014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2"  # MESSAGE-INTEGRITY
    "8028 0004 e57a3bcf"  # FINGERPRINT
)
SAMPLE_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"

# RFC 5769 section 2.2: Binding success response, XOR-MAPPED-ADDRESS 192.0.2.1:32853.
SAMPLE_IPV4_RESPONSE = bytes.fromhex(
    "0101 003c 2112a442 b7e7a701 bc34d686 fa87dfae"
    "8022 000b 74657374 20766563 746f7220"  # SOFTWARE "test vector" and 1 byte of padding
    "0020 0008 0001a147 e112a643"  # XOR-MAPPED-ADDRESS
    "0008 0014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7"  # MESSAGE-INTEGRITY
    "8028 0004 c07d4c96"  # FINGERPRINT
)

# RFC 5769 section 2.3: Binding success response, XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853.
SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "0101 0048 2112a442 b7e7a701 bc34d686 fa87dfae"
    "8022 000b 74657374 20766563 746f7220"  # SOFTWARE "test vector"
    "0020 0014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9"  # XOR-MAPPED-ADDRESS
    "0008 0014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41"  # MESSAGE-INTEGRITY
    "8028 0004 c8fb0b4c"  # FINGERPRINT
)

# RFC 5769 section 2.4: Binding request with long-term credentials (no FINGERPRINT).
SAMPLE_LONG_TERM_REQUEST = bytes.fromhex(
    "0001 0060 2112a442 78ad3433 c6ad72c0 29da412e"
    "0006 0012 e3839ee3 8388e383 aae38383 e382afe3 82b90000"  # USERNAME "マトリックス"
    "0015 001c 662f2f34 39396b39 35346436 4f4c3334 6f4c3946 53547679 36347341"  # NONCE
    "0014 000b 6578616d 706c652e 6f726700"  # REALM "example.org"
    "0008 0014 f6702465 6dd64a3e 02b8e071 2e85c9a2 8ca89666"  # MESSAGE-INTEGRITY
)
LONG_TERM_KEY = hashlib.md5("マトリックス:example.org:TheMatrIX".encode()).digest()  # RFC 8489 section 9.2.2


def reason(call, *args) -> str:
    with pytest.raises(MalformedStun) as caught:
        call(*args)
    return caught.value.reason


def test_sample_request_parses_into_its_attributes():
    message = stun.parse(SAMPLE_REQUEST)

    assert message.message_type == stun.BINDING_REQUEST
    assert message.transaction_id == bytes.fromhex("b7e7a701bc34d686fa87dfae")
    assert [t for t, _ in message.attributes] == [0x8022, 0x0024, 0x8029, stun.USERNAME, 0x0008, 0x8028]
    assert dict(message.attributes)[0x8022] == b"STUN test client"
    assert dict(message.attributes)[stun.USERNAME] == b"evtj:h6vY"


def test_sample_request_username_and_ufrags():
    username = stun.binding_request_username(SAMPLE_REQUEST)

    assert username == b"evtj:h6vY"
    assert stun.split_username(username) == (b"evtj", b"h6vY")


def test_sample_request_fingerprint_and_integrity():
    assert stun.check_fingerprint(SAMPLE_REQUEST)
    assert stun.check_message_integrity(SAMPLE_REQUEST, SAMPLE_PASSWORD)
    assert not stun.check_message_integrity(SAMPLE_REQUEST, b"not the password")


@pytest.mark.parametrize("response", [SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE], ids=["ipv4", "ipv6"])
def test_sample_responses_verify_and_are_not_binding_requests(response):
    message = stun.parse(response)

    assert message.message_type == 0x0101  # Binding success response
    assert dict(message.attributes)[0x8022] == b"test vector"
    assert stun.is_stun(response)
    assert stun.check_fingerprint(response)
    assert stun.check_message_integrity(response, SAMPLE_PASSWORD)
    assert reason(stun.binding_request_username, response) == "not_binding_request"


def test_sample_ipv6_response_carries_the_xor_mapped_address():
    value = dict(stun.parse(SAMPLE_IPV6_RESPONSE).attributes)[0x0020]

    assert value[:2] == b"\x00\x02"  # family IPv6
    port = int.from_bytes(value[2:4], "big") ^ 0x2112
    mask = stun.MAGIC_COOKIE + bytes.fromhex("b7e7a701bc34d686fa87dfae")
    address = bytes(a ^ b for a, b in zip(value[4:], mask, strict=False))
    assert (address.hex(), port) == ("20010db8123456780011223344556677", 32853)


def test_long_term_request_parses_and_verifies_but_is_no_ice_username():
    message = stun.parse(SAMPLE_LONG_TERM_REQUEST)

    assert dict(message.attributes)[0x0014] == b"example.org"
    assert stun.check_message_integrity(SAMPLE_LONG_TERM_REQUEST, LONG_TERM_KEY)
    assert not stun.check_fingerprint(SAMPLE_LONG_TERM_REQUEST)  # it has none
    username = stun.binding_request_username(SAMPLE_LONG_TERM_REQUEST)
    assert username.decode() == "マトリックス"
    assert reason(stun.split_username, username) == "bad_username"


def test_a_flipped_bit_breaks_the_fingerprint_and_the_integrity():
    damaged = bytearray(SAMPLE_REQUEST)
    damaged[30] ^= 0x01  # inside SOFTWARE

    assert not stun.check_fingerprint(bytes(damaged))
    assert not stun.check_message_integrity(bytes(damaged), SAMPLE_PASSWORD)


def test_transaction_reads_type_and_id_of_any_message():
    assert stun.transaction(SAMPLE_REQUEST) == (stun.BINDING_REQUEST, SAMPLE_REQUEST[8:20])
    assert stun.transaction(SAMPLE_IPV4_RESPONSE) == (stun.BINDING_SUCCESS, SAMPLE_IPV4_RESPONSE[8:20])
    error = bytes.fromhex("0111 0000 2112a442") + bytes(range(12))
    assert stun.transaction(error) == (stun.BINDING_ERROR, bytes(range(12)))


@pytest.mark.parametrize("data, reason", [(b"\x80" + bytes(40), "not_stun"), (SAMPLE_REQUEST[:19], "truncated"),
                                          (SAMPLE_REQUEST + bytes(4), "bad_length")])
def test_transaction_of_a_malformed_message(data, reason):
    with pytest.raises(MalformedStun) as caught:
        stun.transaction(data)
    assert caught.value.reason == reason


def test_rfc7983_demux():
    dtls_client_hello = bytes([22, 0xFE, 0xFD]) + bytes(60)
    rtp = bytes([0x80, 111]) + bytes(170)

    assert stun.is_stun(SAMPLE_REQUEST)
    assert not stun.is_stun(dtls_client_hello)
    assert not stun.is_stun(rtp)
    assert not stun.is_stun(SAMPLE_REQUEST[:19])
    assert not stun.is_stun(b"")


def test_truncated_messages():
    assert reason(stun.binding_request_username, SAMPLE_REQUEST[:10]) == "truncated"
    assert reason(stun.binding_request_username, SAMPLE_REQUEST[:60]) == "truncated"
    assert reason(stun.parse, SAMPLE_REQUEST[:-1]) == "truncated"


def test_length_field_that_disagrees_with_the_datagram():
    assert reason(stun.parse, SAMPLE_REQUEST + bytes(4)) == "bad_length"
    not_multiple_of_4 = SAMPLE_REQUEST[:2] + (87).to_bytes(2, "big") + SAMPLE_REQUEST[4:-1]
    assert reason(stun.parse, not_multiple_of_4) == "bad_length"


def test_wrong_magic_cookie_is_not_stun():
    classic_rfc3489 = SAMPLE_REQUEST[:4] + b"\x00\x00\x00\x00" + SAMPLE_REQUEST[8:]

    assert not stun.is_stun(classic_rfc3489)
    assert reason(stun.binding_request_username, classic_rfc3489) == "not_stun"


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes_are_rejected_with_a_reason(seed):
    data = random.Random(seed).randbytes(100)

    assert reason(stun.binding_request_username, data) == "not_stun"


def test_attribute_length_overrunning_the_message():
    # A single attribute claiming 12 bytes of value in an 8-byte body.
    data = bytes.fromhex("0001 0008 2112a442 b7e7a701bc34d686fa87dfae 0006 000c 61626364")

    assert reason(stun.binding_request_username, data) == "bad_attribute"
    assert reason(stun.parse, data) == "bad_attribute"


def test_binding_request_without_username():
    data = bytes.fromhex("0001 0008 2112a442 b7e7a701bc34d686fa87dfae 0024 0004 6e0001ff")

    assert reason(stun.binding_request_username, data) == "no_username"


def test_username_after_message_integrity_is_ignored():
    # RFC 8489 section 14.5: attributes after MESSAGE-INTEGRITY (other than FINGERPRINT) are ignored.
    data = bytes.fromhex(
        "0001 0028 2112a442 b7e7a701bc34d686fa87dfae"
        "0008 0014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2"
        "0006 0009 6576746a 3a683676 59202020"
    )

    assert reason(stun.binding_request_username, data) == "no_username"


@pytest.mark.parametrize("username", [b"evtjh6vY", b":h6vY", b"evtj:"])
def test_split_username_needs_two_ufrags(username):
    assert reason(stun.split_username, username) == "bad_username"


def test_split_username_splits_at_the_first_colon():
    assert stun.split_username(b"abcd:ef:gh") == (b"abcd", b"ef:gh")
