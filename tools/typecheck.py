"""Type-check the package: ``python tools/typecheck.py [mypy options]`` runs mypy with pyproject.toml's
``[tool.mypy]`` settings on ``voicemesh`` as installed, and exits with mypy's status.

The parts keep their top-level folders (edge/, core/, registry/) and install as ``voicemesh.edge`` and so
on through setuptools' package-dir. mypy does not follow the editable install's import hook, so the
package is staged as installed: ``build/typecheck/voicemesh/`` holds symlinks to ``voicemesh/``'s entries
and to the parts (``mypy_path`` points there). The stage is rebuilt on every run and mypy's cache is kept,
so repeated runs are fast; errors are reported under the repository's own paths (``edge/relay.py:12``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from layers import PARTS

REPO = Path(__file__).resolve().parent.parent
STAGE = REPO / "build" / "typecheck"


def stage(root: Path, into: Path) -> None:
    """Make ``into/voicemesh`` the installed layout of ``root``, as symlinks into ``root``."""
    shutil.rmtree(into, ignore_errors=True)
    package = into / "voicemesh"
    package.mkdir(parents=True)
    for entry in (root / "voicemesh").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in PARTS.items():
        (package / name).symlink_to(root / folder)


def repo_paths(line: str) -> str:
    """Rewrite a staged path at the start of a mypy output line to the repository's path."""
    staged = f"{STAGE.relative_to(REPO)}/voicemesh/"
    if not line.startswith(staged):
        return line
    rest = line[len(staged):]
    for name, folder in PARTS.items():
        if rest.startswith(f"{name}/"):
            return f"{folder}/{rest[len(name) + 1:]}"
    return f"voicemesh/{rest}"


def main() -> int:
    """Entry point; returns mypy's exit status (0 clean, 1 type errors, 2 a usage or config error)."""
    stage(REPO, STAGE)
    mypy = Path(sys.executable).with_name("mypy")
    result = subprocess.run([str(mypy), *sys.argv[1:]], cwd=REPO, capture_output=True, text=True)
    for line in result.stdout.splitlines():
        print(repo_paths(line))
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
