"""Configuration from flags, environment and a TOML file, in that order of precedence.

Each part (edge, transceiver, agent) has a dataclass of settings. Every field
``foo_bar`` becomes a flag ``--foo-bar``, an environment variable
``VOICEMESH_FOO_BAR`` and a key ``foo_bar`` in the part's table of the file
given by ``--config`` (for example ``[edge]``). Secrets such as the token keys
belong in the environment or the file, not on a command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

ENV_PREFIX = "VOICEMESH_"


class ConfigError(ValueError):
    """A setting is missing or has the wrong type; the message names it and its source."""


def add_flags(parser: argparse.ArgumentParser, cls: type, helps: Mapping[str, str]) -> None:
    """Add a ``--flag`` for every field of dataclass ``cls`` (default None, so unset flags fall through)."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        text = f"{helps.get(f.name, '')} (default: {f.default!r}; env {ENV_PREFIX}{f.name.upper()})"
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(flag, default=None, metavar=f.name.upper(), help=text)


def load_file(path: str | None) -> dict[str, Any]:
    """Read a TOML config file (``{}`` if ``path`` is None); raises ConfigError."""
    if not path:
        return {}
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None


def setting(name: str, args: argparse.Namespace, table: Mapping[str, Any],
            env: Mapping[str, str] = os.environ) -> tuple[Any, str] | None:
    """The raw value of ``name`` and where it came from, or None if unset everywhere."""
    flag = getattr(args, name, None)
    if flag is not None:
        return flag, "--" + name.replace("_", "-")
    env_name = ENV_PREFIX + name.upper()
    if env_name in env:
        return env[env_name], env_name
    if name in table:
        return table[name], f"config key {name}"
    return None


def build(cls: type[T], args: argparse.Namespace, table: Mapping[str, Any],
          env: Mapping[str, str] = os.environ) -> T:
    """An instance of dataclass ``cls`` from flags, then ``env``, then the file ``table``, then defaults."""
    values = {}
    for f in dataclasses.fields(cls):
        found = setting(f.name, args, table, env)
        if found is not None:
            values[f.name] = _convert(found[0], f.type, f"{found[1]}")
    return cls(**values)


def _convert(value: Any, kind: Any, source: str) -> Any:
    kind = {"str": str, "int": int, "float": float, "bool": bool}.get(kind, kind)
    if kind is bool and isinstance(value, str):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{source}: expected true or false, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: expected {kind.__name__}, got {value!r}") from None
