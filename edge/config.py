"""Settings of the edge processes (relay with WHIP front, and geo DNS): plain dataclasses, so the command
line builds its flags without loading the parts."""

from dataclasses import dataclass, field


@dataclass
class EdgeConfig:
    """Settings of one edge process.

    ``public`` is the relay's UDP bind address and ``advertise`` the address
    put in answers (defaults to the bound public address; set it when the
    host is behind a 1:1 NAT). ``backbone`` is the UDP socket facing
    transceivers, ``http`` the WHIP front. Durations in seconds.

    ICE-TCP (RFC 6544, edge/relay_tcp.py): ``relay_tcp`` is the TCP bind
    address ("" for none; ":443" in deployment), ``advertise_tcp`` the address
    put in answers (default: the advertised relay host with the bound TCP
    port). At most ``tcp_max_connections`` connections, ``tcp_max_per_source``
    per IPv4 address or IPv6 /64; a connection whose first packet has not
    opened a flow within ``tcp_first_packet_timeout_s`` is closed.

    WHIP admission: each source (IPv4 address or IPv6 /64) may POST
    ``whip_rate_per_s`` offers per second on average and ``whip_burst`` at
    once; at most ``whip_max_pending`` offers are forwarded at a time. Each
    source may send ``whip_request_rate_per_s`` PATCH, DELETE and OPTIONS
    requests per second on average and ``whip_request_burst`` at once (a
    browser's call sends about ten: preflights, trickle, DELETE). Each
    session may PATCH ``whip_session_patches_per_min`` times a minute, and
    make ``whip_session_restarts_per_min`` ICE restarts a minute, at this
    edge (token buckets whose burst is the per-minute count; edge/admission.py). The
    ``http_*`` settings bound every connection to the WHIP front and call
    page (voicemesh.runtime.http.HttpLimits).

    WHIP authorization: ``api_keys`` (``"<id>:<secret>,..."``, a secret: set
    it in the environment or the file) turns it on; app backends exchange a
    key for client tokens at ``POST /v1/client_secrets``. Without API keys an
    edge refuses to start with ``http`` on an address other than loopback
    (the demo, tests), unless ``insecure_open`` is set. A TLS front on the
    same host makes a loopback edge public: give such edges API keys.

    WHIP from web pages on other origins (CORS, edge/cors.py): ``cors_origins``
    lists the pages' origins (``"https://app.example.com,https://b.example"``),
    or is ``"*"`` for any; empty, no other origin is granted.
    """

    node_id: str = "edge-1"
    region: str = "local"
    public: str = "127.0.0.1:3478"
    advertise: str = ""
    relay_tcp: str = ""
    advertise_tcp: str = ""
    tcp_max_connections: int = 10_000
    tcp_max_per_source: int = 16
    tcp_first_packet_timeout_s: float = 5.0
    backbone: str = "127.0.0.1:0"
    http: str = "127.0.0.1:8080"
    idle_timeout_s: float = 60.0
    max_flows: int = 100_000
    max_flows_per_token: int = 4
    open_window_s: float = 30.0
    pending_timeout_s: float = 10.0
    reuse_port: bool = False
    lat: float = 0.0
    lon: float = 0.0
    drain_timeout_s: float = 30.0
    api_keys: str = field(default="", repr=False)
    insecure_open: bool = False
    cors_origins: str = ""
    whip_rate_per_s: float = 2.0
    whip_burst: int = 10
    whip_max_pending: int = 256
    whip_request_rate_per_s: float = 10.0
    whip_request_burst: int = 100
    whip_session_patches_per_min: int = 60
    whip_session_restarts_per_min: int = 6
    http_header_timeout_s: float = 5.0
    http_body_timeout_s: float = 10.0
    http_idle_timeout_s: float = 15.0
    http_max_requests: int = 100
    http_max_connections: int = 1024
    region_rtt_ms: str = ""

    def region_rtts(self) -> dict[str, float]:
        """``region_rtt_ms`` ("eu-central=90,us-east=14": core region = backbone round trip in ms from this
        edge's site, from the topology) as a dict. Raises ValueError for a malformed entry."""
        rtts: dict[str, float] = {}
        for entry in filter(None, (part.strip() for part in self.region_rtt_ms.split(","))):
            name, sep, value = entry.partition("=")
            if not name or not sep:
                raise ValueError(f"region_rtt_ms entry {entry!r}: expected region=ms")
            rtts[name] = float(value)
        return rtts


@dataclass
class DnsConfig:
    """Settings of one geo DNS process.

    ``zone`` and ``mesh_name`` are absolute domain names; ``bind`` is the UDP address
    (host:port; "::" takes IPv4 and IPv6); ``geoip_db`` a GeoIP2/GeoLite2 City .mmdb
    file ("" answers every client with the default edge); ``default_edge`` the node id
    for clients without a location; ``ttl_s`` seconds; ``ns`` the name servers as
    ``name[=address],...`` (see edge.geodns.parse_nameservers). ``cache_entries`` and
    ``cache_bytes`` bound the answer cache (edge.geodns.AnswerCache). The ``rrl_*``
    settings are the response rate limits per client prefix (edge.rrl.RrlSettings:
    responses per second by category, 0 for no limit; window in seconds; every
    ``rrl_slip``-th response over the limit sent truncated, the rest dropped). ``tcp`` also
    answers over TCP on ``bind``, with the ``tcp_*`` limits of edge.dns_tcp.DnsTcpServer;
    ``acme_challenge_zone`` delegates ACME DNS-01 by CNAME (edge.geodns.Zone).
    """

    zone: str = "voicemesh.test"
    mesh_name: str = "rtc.voicemesh.test"
    bind: str = "127.0.0.1:8053"
    geoip_db: str = ""
    default_edge: str = ""
    ttl_s: int = 30
    ns: str = ""
    reuse_port: bool = False
    cache_entries: int = 100_000
    cache_bytes: int = 64 << 20
    rrl_answers_per_s: int = 100
    rrl_nodata_per_s: int = 100
    rrl_nxdomains_per_s: int = 10
    rrl_errors_per_s: int = 10
    rrl_window_s: int = 15
    rrl_slip: int = 2
    rrl_ipv4_prefix: int = 24
    rrl_ipv6_prefix: int = 56
    rrl_max_entries: int = 100_000
    tcp: bool = True
    tcp_idle_timeout_s: float = 10.0
    tcp_max_connections: int = 1024
    tcp_max_per_source: int = 16
    tcp_max_query_bytes: int = 1024
    acme_challenge_zone: str = ""
