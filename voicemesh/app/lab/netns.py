"""Network namespaces and TUN links for the lab, through iproute2's ``ip`` (ip-netns(8), ip-link(8)).

Each lab node gets a namespace with loopback up and one TUN link whose file descriptor stays with the
lab process (so the link vanishes when the process does), its /24 address and a default route on
that link, and ``/etc/netns/<namespace>/resolv.conf`` naming the lab's geo DNS server, which
``ip netns exec`` puts in place of /etc/resolv.conf for everything run in the namespace.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import struct
import subprocess
from pathlib import Path

from voicemesh.app.lab.plan import PREFIX, LabError, Node

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
NETNS_ETC = Path("/etc/netns")


def check_host() -> None:
    """Raises LabError("not_root") unless running as root, LabError("no_iproute2") without ``ip``."""
    if os.geteuid() != 0:
        raise LabError("not_root", "the lab creates network namespaces: run it as root")
    if shutil.which("ip") is None or not Path("/dev/net/tun").exists():
        raise LabError("no_iproute2", "the lab needs iproute2's ip and /dev/net/tun")


def ip(*args: str) -> str:
    """Run ``ip args...`` and return its stdout; raises LabError("ip_failed") with its stderr."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise LabError("ip_failed", f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def exec_args(node: Node, *argv: str) -> list[str]:
    """The command line that runs ``argv`` inside ``node``'s namespace."""
    return ["ip", "netns", "exec", node.namespace, *argv]


def add_node(node: Node, nameserver: str) -> int:
    """Create ``node``'s namespace and TUN link; returns the link's non-blocking fd (IFF_NO_PI).

    Raises LabError("ip_failed") or OSError (no /dev/net/tun).
    """
    ip("netns", "add", node.namespace)
    etc = NETNS_ETC / node.namespace
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "resolv.conf").write_text(f"nameserver {nameserver}\noptions timeout:2 attempts:3\n")
    ip("-n", node.namespace, "link", "set", "lo", "up")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", node.link.encode(), IFF_TUN | IFF_NO_PI))
        ip("link", "set", node.link, "netns", node.namespace)
        ip("-n", node.namespace, "addr", "add", f"{node.address}/{node.network.prefixlen}", "dev", node.link)
        ip("-n", node.namespace, "link", "set", node.link, "up")
        ip("-n", node.namespace, "route", "add", "default", "dev", node.link)
    except BaseException:
        os.close(fd)
        raise
    return fd


def namespaces() -> list[str]:
    """The lab's namespaces that exist now (names starting with PREFIX)."""
    names = [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]
    return sorted(name for name in names if name.startswith(PREFIX))


def down() -> list[str]:
    """Remove every lab namespace: SIGKILL what still runs in it, delete it and its /etc/netns entry.
    Returns the namespaces removed. Raises LabError("ip_failed")."""
    removed = namespaces()
    for name in removed:
        for pid in ip("netns", "pids", name).split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        ip("netns", "delete", name)
    for etc in NETNS_ETC.glob(PREFIX + "*") if NETNS_ETC.is_dir() else []:
        shutil.rmtree(etc, ignore_errors=True)
    return removed
