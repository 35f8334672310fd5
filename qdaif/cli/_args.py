"""Argument helpers shared by the commands: one-line errors, argparse types, Hydra overrides.

The rule of the command line: ``run`` takes Hydra overrides (``key=value``), because it
composes ``configs/``. Every other command takes argparse flags; the commands that load
a model (``judge``, a plugin's ``tta``) also take trailing ``key=value`` arguments, which
are Hydra overrides of the model and domain config, parsed by Hydra's override grammar.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, NoReturn

from qdaif.errors import ConfigError

__all__ = ["fail", "command_parser", "number", "finite", "override", "folder_arg", "existing_dir", "parse_int"]


def fail(message: str, code: int = 2) -> NoReturn:
    """Prints ``qdaif: error: MESSAGE`` on stderr and exits with ``code``."""
    print(f"qdaif: error: {message}", file=sys.stderr)
    sys.exit(code)


class _OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one :class:`ConfigError` line instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("python -m qdaif ").split()[0]
        raise ConfigError(f"{command}: {message} (see python -m qdaif {command} --help)")


def command_parser(command: str, description: str) -> argparse.ArgumentParser:
    """An argparse parser for ``python -m qdaif COMMAND``; its errors raise one-line :class:`ConfigError`.

    Args:
        command: The command's name, as typed.
        description: What the command does (shown by ``--help``).
    """
    return _OneLineParser(prog=f"python -m qdaif {command}", description=description)


def number(kind: type, low: float, *, strict: bool = False, what: str = ""):
    """An argparse type: a ``kind`` number >= ``low`` (> ``low`` when ``strict``)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {what or ('a number' if kind is float else 'an integer')} "
                                             f"{'>' if strict else '>='} {low:g}, got {text!r}")
        return value

    return parse


def finite(text: str) -> float:
    """An argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def override(text: str) -> str:
    """An argparse type: a Hydra override (``key=value``, ``+key=value`` or ``~key``), checked by Hydra later."""
    if "=" not in text and not text.startswith("~"):
        raise argparse.ArgumentTypeError(f"expected a key=value config override, got {text!r}")
    return text


def folder_arg(path: str | None, flag: str) -> Path | None:
    """``--out`` naming a folder: refused when it is an existing file."""
    if path is None:
        return None
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {path!r} is a file; give a folder (it is created if missing)")
    return p


def existing_dir(path: str, what: str = "run directory") -> str:
    """``path`` when it is a folder.

    Raises:
        ConfigError: It does not exist or is a file.
    """
    if not Path(path).is_dir():
        raise ConfigError(f"{what} {path!r} does not exist" if not Path(path).exists() else f"{path!r} is not a folder ({what})")
    return path


def parse_int(key: str, value: Any) -> int:
    """``value`` as an integer.

    Raises:
        ConfigError: Naming ``key``, when it is not one.
    """
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be an integer, got {value!r}") from None
