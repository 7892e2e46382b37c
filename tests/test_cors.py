"""CORS grants of the WHIP front (edge/cors.py): only configured origins, ``*`` only when configured."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from voicemesh.edge.config import EdgeConfig
from voicemesh.edge.cors import Cors
from voicemesh.edge.node import EdgeNode
from voicemesh.registry import MemoryRegistry
from voicemesh.runtime.config import ConfigError
from voicemesh.wire.meshkeys import MeshKeys

pytestmark = pytest.mark.unit


def granted(cors: Cors, method: str, path: str, origin: str | None) -> web.Response:
    response = web.Response()
    cors.grant(make_mocked_request(method, path, headers={"Origin": origin} if origin else {}), response)
    return response


def test_an_origin_on_the_list_is_granted_as_browsers_send_it() -> None:
    cors = Cors.from_spec("https://App.Example.com/, http://localhost:8080")
    assert cors.allows("https://app.example.com") and cors.allows("http://localhost:8080")
    for other in ("https://app.example.com:8443", "http://app.example.com", "https://evil.example", "null", ""):
        assert not cors.allows(other), other
    response = granted(cors, "POST", "/v1/sessions", "https://app.example.com")
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert response.headers["Vary"] == "Origin" and "ETag" in response.headers["Access-Control-Expose-Headers"]


def test_no_grant_for_other_origins_other_paths_or_no_origin() -> None:
    cors = Cors.from_spec("https://app.example.com")
    refused = granted(cors, "POST", "/v1/sessions", "https://evil.example")
    assert "Access-Control-Allow-Origin" not in refused.headers and refused.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Origin" not in granted(cors, "POST", "/v1/client_secrets", "https://app.example.com").headers
    assert not granted(cors, "POST", "/v1/sessions", None).headers
    assert cors.counters == {"cors_refused": 1}


def test_nothing_is_granted_by_default_and_any_origin_only_with_a_star() -> None:
    assert not Cors.from_spec("").allows("https://app.example.com")
    assert Cors.from_spec("*").allows("https://anything.example")


def test_a_malformed_origin_is_a_config_error() -> None:
    with pytest.raises(ValueError):
        Cors.from_spec("app.example.com")
    with pytest.raises(ConfigError, match="cors_origins"):
        EdgeNode(EdgeConfig(cors_origins="https://app.example.com/path"), MemoryRegistry(),
                 MeshKeys({1: b"k" * 32}, 1))
