"""Settings of a transceiver process: a plain dataclass, so the command line builds its flags without
loading aiortc."""

from dataclasses import dataclass

MEDIA_PATHS = ("lean", "aiortc")
"""TransceiverConfig.media_path values: the lean path (core/lean.py) or aiortc's RTP path (the reference)."""


@dataclass
class TransceiverConfig:
    """Settings of one transceiver process. Durations in seconds. ``agent_ca`` (a PEM file) turns TLS to
    the agent on; ``agent_cert`` and ``agent_key`` are the transceiver's client certificate for agents that
    require one (mutual TLS)."""

    node_id: str = "trx-1"
    region: str = "local"
    region_id: int = 1
    backbone: str = "127.0.0.1:0"
    capacity: int = 50
    agent: str = "127.0.0.1:50051"
    agent_kind: str = "echo"
    agent_codec: str = "opus"
    agent_rate_hz: int = 16000
    agent_batch_ms: float = 10.0  # core/agent_link.py AgentLink batch_ms
    media_path: str = "lean"
    opus_application: str = "voip"  # core/media.py DEFAULT_APPLICATION (bench/opus_complexity.py)
    opus_bitrate: int = 32000  # core/media.py DEFAULT_BITRATE
    opus_complexity: int = 4  # core/media.py DEFAULT_COMPLEXITY
    setup_hold_ms: float = 50.0  # core/priority.py HOLD_MAX_S
    connect_timeout_s: float = 10.0
    max_session_s: float = 4 * 3600.0
    lat: float = 0.0
    lon: float = 0.0
    drain_timeout_s: float = 30.0
    agent_ca: str = ""
    agent_cert: str = ""
    agent_key: str = ""
