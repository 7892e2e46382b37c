"""Check the import layers: ``python tools/layers.py [--root DIR]`` runs import-linter's contracts
(pyproject.toml ``[tool.importlinter]``) and checks that the wire layer imports only the standard library.

The parts keep their top-level folders (edge/, core/, registry/) and install as ``voicemesh.edge`` and so
on through setuptools' package-dir; import-linter reads packages from one directory tree, so the tree is
staged as installed (``voicemesh/`` with the parts inside) in a temporary directory first. Exits 1 with
import-linter's report when a contract is broken.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PARTS = {"edge": "edge", "core": "core", "registry": "registry"}


def stage(root: Path, into: Path) -> Path:
    """Copy ``root``'s packages to ``into/voicemesh`` in their installed layout; returns that directory."""
    package = into / "voicemesh"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(root / "voicemesh", package, ignore=ignore)
    for name, folder in PARTS.items():
        shutil.copytree(root / folder, package / name, ignore=ignore)
    return package


def non_stdlib_imports(package: Path) -> list[str]:
    """``file: module`` for every import in ``package`` of something other than the standard library or
    ``package`` itself."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            own = f"voicemesh.{package.name}"
            found += [f"{path.name}: {n}" for n in names
                      if n.split(".")[0] not in sys.stdlib_module_names and n != own and not n.startswith(own + ".")]
    return found


def check(root: Path) -> int:
    """Run the checks on the tree at ``root``; returns the exit status (0 kept, 1 broken)."""
    with tempfile.TemporaryDirectory(prefix="voicemesh-layers-") as tmp:
        package = stage(root, Path(tmp))
        outside = non_stdlib_imports(package / "wire")
        for line in outside:
            print(f"voicemesh.wire must import only the standard library: {line}")
        env = {**os.environ, "PYTHONPATH": tmp}
        lint = Path(sys.executable).with_name("lint-imports")
        result = subprocess.run([str(lint), str(root / "pyproject.toml"), "--no-cache"], cwd=tmp, env=env)
        return 1 if outside or result.returncode else 0


def main() -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO, help="the source tree to check (default: this one)")
    return check(parser.parse_args().root)


if __name__ == "__main__":
    sys.exit(main())
