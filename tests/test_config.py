"""Settings come from flags, then the environment, then the config file, then defaults."""

from __future__ import annotations

import argparse

import pytest

from voicemesh.edge.config import EdgeConfig
from voicemesh.runtime import config

pytestmark = pytest.mark.unit


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config.add_flags(parser, EdgeConfig, {})
    return parser.parse_args(argv)


def test_precedence_flag_env_file_default() -> None:
    table = {"node_id": "from-file", "region": "file-region", "max_flows": 10}
    env = {"VOICEMESH_REGION": "env-region", "VOICEMESH_REUSE_PORT": "yes"}
    cfg = config.build(EdgeConfig, parse("--node-id", "from-flag"), table, env)
    assert cfg.node_id == "from-flag"
    assert cfg.region == "env-region"
    assert cfg.max_flows == 10
    assert cfg.reuse_port is True
    assert cfg.idle_timeout_s == EdgeConfig.idle_timeout_s


def test_wrong_types_name_their_source() -> None:
    with pytest.raises(config.ConfigError, match="VOICEMESH_MAX_FLOWS"):
        config.build(EdgeConfig, parse(), {}, {"VOICEMESH_MAX_FLOWS": "many"})
    with pytest.raises(config.ConfigError, match="--idle-timeout-s"):
        config.build(EdgeConfig, parse("--idle-timeout-s", "soon"), {}, {})


def test_unreadable_file_is_a_config_error(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[edge\n")
    with pytest.raises(config.ConfigError, match="cannot read config file"):
        config.load_file(str(bad))
