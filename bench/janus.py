"""Janus EchoTest, the C reference beside the transceiver in ``make bench``: Debian's ``janus`` in a network
namespace of its own.

libnice (Janus' ICE) never gathers on loopback, so Janus runs in a namespace with a veth pair whose two
ends both stay inside it: Janus gathers on end ``a`` (10.77.0.1) only, the load client binds end ``b``
(10.77.0.2). libnice sends bound to its device, so its replies cross a→b and arrive with a local source
address; ``accept_local=1`` keeps the kernel from dropping them as martians. Janus loads only the EchoTest
plugin and the HTTP transport (on the namespace's 127.0.0.1), with no session timeout (the calls never
send keepalives). The namespace, and with it the veth pair, is removed on exit.

Needs root (``ip netns``), ``janus`` (``apt-get install janus``), ``taskset``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

JANUS_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
SERVER_IP = "10.77.0.1"
CLIENT_IP = "10.77.0.2"
HTTP_PORT = 8088
URL = f"http://127.0.0.1:{HTTP_PORT}/janus"
"""Janus' HTTP API root, as seen from inside the namespace."""


class JanusError(RuntimeError):
    """Janus or its namespace could not be set up; the message says what failed."""


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise JanusError(f"{' '.join(argv)}: {done.stderr.strip()}")


def _library(kind: str, name: str) -> Path:
    """The installed Janus module ``name`` of ``kind`` (plugins, transports) under the multiarch lib dir."""
    candidates = [JANUS_LIB / kind / name, *Path("/usr/lib").glob(f"*/janus/{kind}/{name}")]
    for path in candidates:
        if path.exists():
            return path
    raise JanusError(f"{name} not found: apt-get install janus")


def write_config(directory: Path, device: str, debug_level: int = 3) -> Path:
    """Janus configuration in ``directory`` (EchoTest and HTTP only, ICE on ``device`` only); returns the
    main file (janus.jcfg). Raises JanusError if the Janus modules are not installed."""
    for kind, name in (("plugins", "libjanus_echotest.so"), ("transports", "libjanus_http.so")):
        (directory / kind).mkdir(parents=True, exist_ok=True)
        (directory / kind / name).symlink_to(_library(kind, name))
    for kind in ("events", "loggers"):
        (directory / kind).mkdir(exist_ok=True)
    main = directory / "janus.jcfg"
    main.write_text(f"""general: {{
    configs_folder = "{directory}"
    plugins_folder = "{directory}/plugins"
    transports_folder = "{directory}/transports"
    events_folder = "{directory}/events"
    loggers_folder = "{directory}/loggers"
    debug_level = {debug_level}
    session_timeout = 0
}}
media: {{
    rtp_port_range = "20000-60000"
}}
nat: {{
    ice_enforce_list = "{device}"
}}
""")
    (directory / "janus.transport.http.jcfg").write_text(f"""general: {{
    json = "plain"
    base_path = "/janus"
    http = true
    port = {HTTP_PORT}
    ip = "127.0.0.1"
}}
admin: {{
    admin_http = false
}}
""")
    (directory / "janus.plugin.echotest.jcfg").write_text("general: {\n}\n")
    return main


class JanusNetns:
    """Network namespace ``name`` with a veth pair inside: ``<prefix>a`` (SERVER_IP, Janus) and ``<prefix>b``
    (CLIENT_IP, the load client), loopback up, local source addresses accepted.

    ``prefix`` must be unique on the host and at most 14 characters (interface names are 15 at most).
    Use as a context manager; ``exec(argv)`` is the argv prefixed to run inside. Raises JanusError.
    """

    def __init__(self, name: str, prefix: str) -> None:
        if len(prefix) > 14:
            raise ValueError(f"veth prefix {prefix!r} longer than 14 characters")
        self.name = name
        self.server_dev, self.client_dev = f"{prefix}a", f"{prefix}b"

    def exec(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def __enter__(self) -> JanusNetns:
        if shutil.which("ip") is None:
            raise JanusError("ip not found: apt-get install iproute2")
        _run("ip", "netns", "add", self.name)
        try:
            inside = ["ip", "-n", self.name]
            _run(*inside, "link", "add", self.server_dev, "type", "veth", "peer", "name", self.client_dev)
            _run(*inside, "addr", "add", f"{SERVER_IP}/24", "dev", self.server_dev)
            _run(*inside, "addr", "add", f"{CLIENT_IP}/24", "dev", self.client_dev)
            for dev in ("lo", self.server_dev, self.client_dev):
                _run(*inside, "link", "set", dev, "up")
            for conf in ("all", self.server_dev, self.client_dev):
                _run(*self.exec(["sysctl", "-q", "-w", f"net.ipv4.conf.{conf}.accept_local=1"]))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the namespace (its veth pair goes with it)."""
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


class Janus:
    """``janus`` running in ``netns`` pinned to ``cpu``, logging to ``workdir/janus.log``; ``pid`` is its
    process id (the same in every namespace). Use as a context manager: SIGTERM on exit, SIGKILL after
    5 s. Raises JanusError if janus is missing or exits at once."""

    def __init__(self, netns: JanusNetns, workdir: Path, cpu: str) -> None:
        self.netns = netns
        self.workdir = workdir
        self.cpu = cpu
        self.pid = 0
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> Janus:
        janus = shutil.which("janus")
        if janus is None:
            raise JanusError("janus not found: apt-get install janus")
        config = write_config(self.workdir / "janus-conf", self.netns.server_dev)
        with open(self.workdir / "janus.log", "wb") as log:
            self._proc = subprocess.Popen(
                self.netns.exec(["taskset", "-c", self.cpu, janus, "-C", str(config), "-F", str(config.parent),
                                 "--disable-colors"]),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        # ip netns exec and taskset exec in place: the child's pid is janus' own.
        self.pid = self._proc.pid
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def running(self) -> bool:
        """Whether janus is still running."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of janus' log."""
        path = self.workdir / "janus.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def close(self) -> None:
        """Stop janus."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None
