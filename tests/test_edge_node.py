"""Tests for voicemesh.edge.node's start-up rule: an edge serves WHIP off loopback only with authorization."""

import pytest

from voicemesh.edge.config import EdgeConfig
from voicemesh.edge.node import EdgeNode, is_loopback
from voicemesh.registry import MemoryRegistry
from voicemesh.runtime.config import ConfigError
from voicemesh.wire.meshkeys import MeshKeys

pytestmark = pytest.mark.unit

KEYS = MeshKeys({1: b"k" * 32}, 1)
API_KEY = "app:0123456789abcdef0123"


@pytest.mark.parametrize("http", ["0.0.0.0:8080", "[::]:8080", "192.0.2.10:80", "edge.example:8080"])
def test_an_open_whip_front_off_loopback_is_refused_at_start(http: str) -> None:
    with pytest.raises(ConfigError, match="--insecure-open"):
        EdgeNode(EdgeConfig(http=http), MemoryRegistry(), KEYS)


@pytest.mark.parametrize("options", [{"api_keys": API_KEY}, {"insecure_open": True}])
def test_api_keys_or_insecure_open_let_it_start_anywhere(options: dict) -> None:
    assert EdgeNode(EdgeConfig(http="0.0.0.0:8080", **options), MemoryRegistry(), KEYS).config.http == "0.0.0.0:8080"


@pytest.mark.parametrize("http", ["127.0.0.1:8080", "127.0.0.2:0", "[::1]:8080", "localhost:8080"])
def test_loopback_needs_no_auth(http: str) -> None:
    assert EdgeNode(EdgeConfig(http=http), MemoryRegistry(), KEYS)


def test_bad_api_keys_are_a_config_error_without_the_secret() -> None:
    with pytest.raises(ConfigError, match="api_keys") as caught:
        EdgeNode(EdgeConfig(api_keys="app:tiny-secret"), MemoryRegistry(), KEYS)
    assert "tiny-secret" not in str(caught.value)


def test_the_config_repr_holds_no_api_key() -> None:
    assert "0123456789abcdef0123" not in repr(EdgeConfig(api_keys=API_KEY))


def test_is_loopback() -> None:
    assert is_loopback("127.9.9.9") and is_loopback("::1") and not is_loopback("::") and not is_loopback("")
