"""Socket address text: ``host:port`` and ``[v6]:port``, as config, registry records and headers carry it."""


def parse_hostport(text: str) -> tuple[str, int]:
    """Parse ``host:port`` or ``[v6]:port`` into ``(host, port)``.

    Raises ValueError for a missing or non-numeric port, an empty host, or a port over 65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected host:port, got {text!r}")
    port_n = int(port)
    if port_n > 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host.strip("[]"), port_n


def format_hostport(addr: tuple[str, int]) -> str:
    """``(host, port)`` as ``host:port`` (IPv6 in brackets); extra tuple fields (flowinfo, scope id) are dropped."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
