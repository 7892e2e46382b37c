"""One rehearsal host's boot: what cloud-init and systemd do on an EC2 instance, inside its own network and
mount namespaces.

``hostinit.py boot HOSTDIR`` (run in the host's network namespace by tools/rehearsal/run.py) gives the
host a filesystem of its own: overlays on /etc, /usr, /var and /root (upper layers under HOSTDIR) and a
fresh tmpfs on /run, with HOSTDIR/preinstalled/ copied in first (what the AMI and cloud-init's
``packages`` would bring: the docker shim, the aws CLI, the AWS endpoint in /root/.aws/config, /etc/hosts).
Then, as cloud-init: the user data's ``write_files`` at their paths with their permissions, and its
``runcmd`` in order. ``systemctl daemon-reload|enable --now UNIT...`` in it are handled by
:class:`Systemd`, which starts each unit from its own unit file and drop-ins as systemd would.
``hostinit.py systemctl start|stop|restart|daemon-reload [UNIT...]`` (the host's ``/usr/bin/systemctl``,
run.py's preinstall) asks the booted host's Systemd over CONTROL, as systemctl asks systemd over D-Bus:
``start`` returns once each unit runs (a oneshot once it has finished, failing if it failed), ``stop``
once each has stopped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
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
CONTROL = "/run/rehearsal-systemd.sock"
"""The booted host's Systemd listens here (one JSON line: systemctl's arguments; one JSON line back)."""
STOP_TIMEOUT_S = 90.0
"""systemd's default TimeoutStopSec: then what is left of a stopped unit's main process is SIGKILLed."""


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
    finished). ``stop`` runs ExecStop=, then SIGTERMs the main process if it still runs, and the unit
    is not restarted. Each unit's output goes to LOG_DIR/UNIT.log."""

    def __init__(self, dirs: tuple[str, ...] = UNIT_DIRS, log_dir: str = LOG_DIR) -> None:
        self.dirs, self.log_dir = dirs, log_dir
        self.started: dict[str, threading.Event] = {}
        self.stopping = threading.Event()
        self.children: set[subprocess.Popen] = set()
        self.stopped: dict[str, threading.Event] = {}
        self.threads: dict[str, threading.Thread] = {}
        self.main: dict[str, subprocess.Popen] = {}
        self.clean: dict[str, bool] = {}
        """Each unit's last start: True if it ended cleanly (oneshot) or is running (others)."""

    def log(self, unit: Unit):
        os.makedirs(self.log_dir, exist_ok=True)
        return open(os.path.join(self.log_dir, unit.name + ".log"), "a")

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
        if self.stopped[unit.name].is_set():
            return False
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
        self.main[unit.name] = proc
        self.started[unit.name].set()
        proc.wait()
        self.children.discard(proc)
        return proc.returncode == 0

    def supervise(self, unit: Unit) -> None:
        for name in unit.after():
            if name in self.started and name != unit.name:
                self.started[name].wait()
        restart = unit.get("Restart", "no")
        stopped = self.stopped[unit.name]
        with self.log(unit) as out:
            while not (self.stopping.is_set() or stopped.is_set()):
                clean = self.start_once(unit, out)
                self.clean[unit.name] = clean
                out.write(f"--- {time.strftime('%H:%M:%S')} {'exited' if clean else 'failed'}\n")
                out.flush()
                if restart == "no" or (restart == "on-failure" and clean) or unit.get("Type") == "oneshot" and clean:
                    return
                stopped.wait(float(unit.get("RestartSec", "0.1").rstrip("s")))

    def units(self, names: list[str]) -> list[Unit]:
        """The units of ``names`` that the rehearsal runs: docker has no daemon, and timers are fired by the
        rehearsal (run.py), not on their period."""
        return [u for u in (Unit(n, self.dirs) for n in names if n not in NOT_EMULATED) if not u.name.endswith(".timer")]

    def start(self, names: list[str]) -> list[Unit]:
        """Start each unit not running yet (as ``systemctl start``); returns those started."""
        started = []
        for unit in self.units(names):
            if unit.name in self.threads and self.threads[unit.name].is_alive():
                continue
            self.started[unit.name] = threading.Event()
            self.stopped[unit.name] = threading.Event()
            self.clean.pop(unit.name, None)
            self.threads[unit.name] = threading.Thread(target=self.supervise, args=(unit,), daemon=True, name=unit.name)
            self.threads[unit.name].start()
            started.append(unit)
        return started

    def stop(self, names: list[str]) -> None:
        """Stop each running unit (as ``systemctl stop``): no restart, ExecStop=, then SIGTERM to the main
        process if it is still there, SIGKILL after STOP_TIMEOUT_S."""
        for unit in self.units(names):
            thread = self.threads.get(unit.name)
            if thread is None or not thread.is_alive():
                continue
            self.stopped[unit.name].set()
            with self.log(unit) as out:
                for value in unit.settings.get("ExecStop", []):
                    self.run(unit, value, out)
            main = self.main.get(unit.name)
            if main is not None and main.poll() is None:
                main.terminate()
            thread.join(STOP_TIMEOUT_S)
            if main is not None and main.poll() is None:
                main.kill()
                thread.join()

    def systemctl(self, argv: list[str]) -> bool:
        """``systemctl daemon-reload`` (units are read at start), ``enable --now``, ``start``, ``stop`` or
        ``restart`` of units. True if every unit asked to start runs (a oneshot: finished cleanly).
        Raises UnitError for anything else."""
        verb, names = (argv[0], argv[1:]) if argv else ("", [])
        if verb == "daemon-reload":
            return True
        if verb == "enable" and names[:1] == ["--now"]:
            self.start(names[1:])  # cloud-init's runcmd goes on: the units start in the background
            return True
        if verb in ("stop", "restart"):
            self.stop(names)
        elif verb != "start":
            raise UnitError(f"systemctl {' '.join(argv)} is not part of the rehearsal")
        ok = True
        for unit in self.start(names) if verb != "stop" else []:
            if unit.get("Type") == "oneshot":
                self.threads[unit.name].join()
            else:
                while not self.started[unit.name].is_set() and self.threads[unit.name].is_alive():
                    self.started[unit.name].wait(0.5)
            ok &= self.clean.get(unit.name, self.started[unit.name].is_set())
        return ok

    def serve(self, path: str = CONTROL) -> None:
        """Answer ``systemctl`` on the host (``hostinit.py systemctl``) over the Unix socket ``path``."""
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen()

        def answer(conn: socket.socket) -> None:
            with conn, conn.makefile("rw") as stream:
                try:
                    reply = {"ok": self.systemctl(json.loads(stream.readline()))}
                except (UnitError, ValueError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                stream.write(json.dumps(reply) + "\n")

        while True:
            conn, _ = server.accept()
            threading.Thread(target=answer, args=(conn,), daemon=True).start()


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
    threading.Thread(target=systemd.serve, daemon=True, name="systemctl").start()
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
    if argv[:1] == ["systemctl"]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(CONTROL)
            with conn.makefile("rw") as stream:
                stream.write(json.dumps(argv[1:]) + "\n")
                stream.flush()
                reply = json.loads(stream.readline())
        if reply.get("error"):
            print(f"systemctl: {reply['error']}", file=sys.stderr)
        return 0 if reply["ok"] else 1
    print("usage: hostinit.py boot HOSTDIR | systemctl start|stop|restart|daemon-reload [UNIT...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
