"""A network namespace for one transceiver, joined to the host by two veth pairs, so a fault can cut the
backbone alone (ip-netns(8), ip-link(8), veth(4)).

``control`` carries the transceiver's HTTP API and its etcd connection; ``backbone`` carries only the
backbone frames between the edge and the transceiver. ``cut()`` sets the host end of the backbone pair down:
its route goes and nothing crosses it either way, as when the path between a PoP and a core region fails,
while the transceiver keeps its etcd lease and API. ``heal()`` sets it up again. Names and the 10.N.0.0/23
addresses are derived from the harness's pid, so parallel runs do not collide.
"""

from __future__ import annotations

import os
import subprocess


class NetnsError(RuntimeError):
    """An ``ip`` command failed; the message holds its stderr."""


def ip(*args: str) -> str:
    """Run ``ip args...``; its stdout. Raises NetnsError."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


class BackboneNetns:
    """The namespace and its two links. ``host_control``/``inside_control`` and ``host_backbone``/
    ``inside_backbone`` are the IPv4 addresses of each pair's ends. Create with ``open()`` (raises NetnsError;
    needs root), remove with ``close()``."""

    def __init__(self) -> None:
        pid = os.getpid()
        self.name = f"vmfaults{pid}"
        net = 100 + pid % 100
        sub = (pid // 100) % 127 * 2
        self.host_control, self.inside_control = f"10.{net}.{sub}.1", f"10.{net}.{sub}.2"
        self.host_backbone, self.inside_backbone = f"10.{net}.{sub + 1}.1", f"10.{net}.{sub + 1}.2"
        self._links = {f"vfc{pid}": (self.host_control, self.inside_control),
                       f"vfb{pid}": (self.host_backbone, self.inside_backbone)}
        self.backbone_link = f"vfb{pid}"
        self._opened = False

    def open(self) -> None:
        ip("netns", "add", self.name)
        self._opened = True
        ip("-n", self.name, "link", "set", "lo", "up")
        for link, (host, inside) in self._links.items():
            ip("link", "add", link, "type", "veth", "peer", "name", link + "n")
            ip("link", "set", link + "n", "netns", self.name)
            ip("addr", "add", f"{host}/30", "dev", link)
            ip("-n", self.name, "addr", "add", f"{inside}/30", "dev", link + "n")
            ip("link", "set", link, "up")
            ip("-n", self.name, "link", "set", link + "n", "up")

    def exec_args(self, *argv: str) -> list[str]:
        """The command line that runs ``argv`` in the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        """Set the host end of the backbone link down."""
        ip("link", "set", self.backbone_link, "down")

    def heal(self) -> None:
        """Set it up again (its route comes back with it)."""
        ip("link", "set", self.backbone_link, "up")

    def close(self) -> None:
        """Delete the links and the namespace (stop what runs in it first); never raises."""
        for link in self._links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        if self._opened:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
            self._opened = False
