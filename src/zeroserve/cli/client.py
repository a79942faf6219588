"""What the commands share: the Python client, the consoles and one-line errors.

Commands raise; ``zeroserve.cli.main.run`` turns any error into one line on
stderr and a non-zero exit.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

from rich.console import Console

from zeroserve.client import Client, parse_model_ref
from zeroserve.errors import BadRequest

__all__ = ["Client", "console", "fail", "one_line", "parse_model_ref", "print_error", "read_text"]

console = Console()


class CliError(BadRequest):
    """A mistake on the command line; the message says what to do instead."""

    code = "cli_error"


def fail(message: str) -> NoReturn:
    raise CliError(message)


def one_line(message: str) -> str:
    return " ".join(str(message).split())


def print_error(message: str) -> None:
    """``error: ...`` on stderr as one line, whatever the terminal width."""
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()


def read_text(path: Path, what: str) -> str:
    """A file's text, or a one-line error naming the option (``-`` reads stdin)."""
    if str(path) == "-":
        return sys.stdin.read()
    if not path.exists():
        fail(f"{what} {path} does not exist; check the path")
    if not path.is_file():
        fail(f"{what} {path} is not a file")
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {what} {path}: {exc}")
