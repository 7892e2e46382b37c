"""One rehearsal host's boot: what cloud-init and systemd do on an EC2 instance, inside its own network and
mount namespaces.

``hostinit.py boot HOSTDIR`` (run in the host's network namespace by tools/rehearsal/run.py) gives the
host a filesystem of its own: overlays on /etc, /usr, /var and /root (upper layers under HOSTDIR) and a
fresh tmpfs on /run, with HOSTDIR/preinstalled/ copied in first (what the AMI and cloud-init's
``packages`` would bring: the docker shim, the aws CLI, the AWS endpoint in /root/.aws/config, /etc/hosts).
Then, as cloud-init: the user data's ``write_files`` at their paths with their permissions, and its
``runcmd`` in order. ``systemctl daemon-reload|enable --now UNIT...`` in it are handled by
:class:`Systemd`, which starts each unit from its own unit file and drop-ins as systemd would.
``hostinit.py systemctl start UNIT`` (run inside a booted host through nsenter) runs a oneshot unit in
the foreground, as ``systemctl start`` does.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOG_DIR = "/var/log/rehearsal"
NOT_EMULATED = {"docker"}
"""Units cloud-init's runcmd enables that the rehearsal has no daemon for: docker is a shim without one."""


class UnitError(ValueError):
    """A unit file is missing or uses a setting the rehearsal does not run."""


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """A unit file's sections as ``{section: [(key, value), ...]}`` in order, continuation lines joined,
    comments skipped."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        elif current is not None and "=" in line:
            key, value = line.split("=", 1)
            current.append((key.strip(), value.strip()))
    return sections


class Unit:
    """A unit as systemd loads it: its file from UNIT_DIRS, then its drop-ins (``NAME.d/*.conf``); a list
    setting assigned empty is reset (``ExecStartPre=``). ``%i`` is the template instance."""

    def __init__(self, name: str, dirs: tuple[str, ...] = UNIT_DIRS) -> None:
        self.name = name if "." in name else name + ".service"
        stem, _, suffix = self.name.rpartition(".")
        prefix, at, self.instance = stem.partition("@")
        file_name = f"{prefix}@.{suffix}" if at else self.name
        path = next((Path(d) / file_name for d in dirs if (Path(d) / file_name).exists()), None)
        if path is None:
            raise UnitError(f"unit {self.name} not found")
        texts = [path.read_text()]
        for d in dirs:
            dropins = Path(d) / f"{self.name}.d"
            texts += [p.read_text() for p in sorted(dropins.glob("*.conf"))] if dropins.is_dir() else []
        self.settings: dict[str, list[str]] = {}
        for text in texts:
            for section in parse_unit(text).values():
                for key, value in section:
                    value = value.replace("%i", self.instance).replace("%n", self.name)
                    if value == "":
                        self.settings[key] = []
                    else:
                        self.settings.setdefault(key, []).append(value)

    def get(self, key: str, default: str = "") -> str:
        values = self.settings.get(key) or [default]
        return values[-1]

    def after(self) -> list[str]:
        return [u for v in self.settings.get("After", []) + self.settings.get("Requires", []) for u in v.split()]

    def environment(self) -> dict:
        """The service's environment for one command: PATH, Environment=, then each EnvironmentFile= read
        now (systemd reads them for every command it spawns; ``-`` allows a missing file)."""
        env = {"PATH": SERVICE_PATH}
        for value in self.settings.get("Environment", []):
            for word in shlex.split(value):
                name, _, val = word.partition("=")
                env[name] = val
        for value in self.settings.get("EnvironmentFile", []):
            optional, path = value.startswith("-"), value.lstrip("-")
            try:
                with open(path) as fh:
                    for line in fh:
                        line = line.strip()
                        if line and not line.startswith("#") and "=" in line:
                            name, val = line.split("=", 1)
                            env[name] = val.strip('"')
            except FileNotFoundError:
                if not optional:
                    raise
        return env


def command_line(value: str, env: dict) -> tuple[list[str], bool]:
    """An Exec*= value as argv (systemd.service(5) "Command lines": words, quotes, ``${VAR}`` in a word,
    ``$VAR`` alone split at whitespace) and whether failure is ignored (the ``-`` prefix)."""
    ignore = False
    while value and value[0] in "-@+!:":
        ignore = ignore or value[0] == "-"
        value = value[1:]
    argv: list[str] = []
    for word in shlex.split(value):
        alone = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if alone:
            argv += env.get(alone.group(1), "").split()
        else:
            argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return argv, ignore


class Systemd:
    """Starts units as systemd would and keeps them running: ExecStartPre= in order (a failure without
    ``-`` fails the start), ExecStart=, then Restart= with RestartSec=; Type=simple, oneshot and forking
    (PIDFile=). A unit waits for the units it is After= that are being started (a oneshot until it has
    finished). Each unit's output goes to LOG_DIR/UNIT.log."""

    def __init__(self) -> None:
        self.started: dict[str, threading.Event] = {}
        self.stopping = threading.Event()
        self.children: set[subprocess.Popen] = set()

    def log(self, unit: Unit):
        os.makedirs(LOG_DIR, exist_ok=True)
        return open(os.path.join(LOG_DIR, unit.name + ".log"), "a")

    def run(self, unit: Unit, value: str, out, wait: bool = True) -> tuple[subprocess.Popen, bool]:
        argv, ignore = command_line(value, unit.environment())
        out.write(f"--- {time.strftime('%H:%M:%S')} {shlex.join(argv)}\n")
        out.flush()
        proc = subprocess.Popen(argv, env=unit.environment(), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd="/")
        self.children.add(proc)
        if wait:
            proc.wait()
            self.children.discard(proc)
        return proc, ignore

    def start_once(self, unit: Unit, out) -> bool:
        """One start of ``unit``: True if it ran to a clean end (oneshot) or its main process exited 0."""
        for value in unit.settings.get("ExecStartPre", []):
            proc, ignore = self.run(unit, value, out)
            if proc.returncode != 0 and not ignore:
                return False
        kind = unit.get("Type", "simple")
        if kind == "oneshot":
            for value in unit.settings.get("ExecStart", []):
                proc, ignore = self.run(unit, value, out)
                if proc.returncode != 0 and not ignore:
                    return False
            self.started[unit.name].set()
            return True
        proc, _ = self.run(unit, unit.get("ExecStart"), out, wait=kind == "forking")
        if kind == "forking":
            if proc.returncode != 0:
                return False
            pid = int(Path(unit.get("PIDFile")).read_text())
            self.started[unit.name].set()
            while not self.stopping.is_set():
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return False
                time.sleep(0.5)
            return True
        self.started[unit.name].set()
        proc.wait()
        self.children.discard(proc)
        return proc.returncode == 0

    def supervise(self, unit: Unit) -> None:
        for name in unit.after():
            if name in self.started and name != unit.name:
                self.started[name].wait()
        restart = unit.get("Restart", "no")
        with self.log(unit) as out:
            while not self.stopping.is_set():
                clean = self.start_once(unit, out)
                out.write(f"--- {time.strftime('%H:%M:%S')} {'exited' if clean else 'failed'}\n")
                out.flush()
                if restart == "no" or (restart == "on-failure" and clean) or unit.get("Type") == "oneshot" and clean:
                    return
                time.sleep(float(unit.get("RestartSec", "0.1").rstrip("s")))

    def start(self, names: list[str]) -> None:
        for name in names:
            if name in NOT_EMULATED:
                continue
            unit = Unit(name)
            if unit.name.endswith(".timer"):
                continue  # timers are fired by the rehearsal (run.py), not on their period
            self.started[unit.name] = threading.Event()
            threading.Thread(target=self.supervise, args=(unit,), daemon=True, name=unit.name).start()

    def systemctl(self, argv: list[str]) -> None:
        """``systemctl daemon-reload`` (units are read at start) or ``enable --now UNIT...``."""
        if argv[:1] == ["daemon-reload"]:
            return
        if argv[:2] == ["enable", "--now"]:
            self.start(argv[2:])
            return
        raise UnitError(f"systemctl {' '.join(argv)} is not part of the rehearsal")


def mount_host(hostdir: Path) -> None:
    """The host's own filesystem: overlays on /etc, /usr, /var, /root; a tmpfs on /run; then the
    preinstalled files. Needs a private mount namespace (``ip netns exec`` makes one)."""
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    for top in ("etc", "usr", "var", "root"):
        upper, work = hostdir / "fs" / top, hostdir / "work" / top
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir=/{top},upperdir={upper},workdir={work}", f"/{top}"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"], check=True)
    preinstalled = hostdir / "preinstalled"
    for path in preinstalled.rglob("*"):
        if path.is_file():
            target = Path("/") / path.relative_to(preinstalled)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def cloud_init(user_data: dict, systemd: Systemd) -> None:
    """cloud-init's write_files (path, permissions, content; owner root) and runcmd, in that order."""
    for entry in user_data.get("write_files", []):
        path = Path(entry["path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(entry["content"])
        path.chmod(int(entry.get("permissions", "0644"), 8))
    for command in user_data.get("runcmd", []):
        if command[0] == "systemctl":
            systemd.systemctl(command[1:])
        else:
            subprocess.run(command, check=True)


def boot(hostdir: Path) -> None:
    mount_host(hostdir)
    systemd = Systemd()
    cloud_init(yaml.safe_load((hostdir / "user-data").read_text()), systemd)
    (hostdir / "booted").write_text(json.dumps({"pid": os.getpid()}))

    def shutdown(*_) -> None:
        systemd.stopping.set()
        for proc in list(systemd.children):
            proc.terminate()
        sys.exit(0)

    signal.signal(signal.SIGTERM, shutdown)
    while True:
        time.sleep(3600)


def main(argv: list[str]) -> int:
    if argv[:1] == ["boot"]:
        boot(Path(argv[1]))
        return 0
    if argv[:2] == ["systemctl", "start"]:
        systemd = Systemd()
        unit = Unit(argv[2])
        systemd.started[unit.name] = threading.Event()
        with systemd.log(unit) as out:
            return 0 if systemd.start_once(unit, out) else 1
    print("usage: hostinit.py boot HOSTDIR | systemctl start UNIT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
