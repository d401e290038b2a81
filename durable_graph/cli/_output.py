"""What every command shares: settings flags, tables for people, JSON for scripts.

Tables are aligned columns with a header; long cells are cut to ``WIDTH``
characters with an ellipsis unless ``--full`` is given. ``--json`` prints one JSON
document, never truncated. Exit statuses: 0 done, 1 refused (no such thread, a
status that does not allow it, a run still going), 2 bad settings or input,
3 timed out waiting (the run goes on).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from durable_graph.errors import (
    ThreadBusyError,
    ThreadNotFoundError,
    ThreadStateError,
)

__all__ = [
    "REFUSED",
    "TIMED_OUT",
    "USAGE",
    "WIDTH",
    "Formatter",
    "add_output_flags",
    "age",
    "cell",
    "emit_json",
    "exit_status",
    "json_arg",
    "log_level",
    "non_empty",
    "port",
    "positive_int",
    "positive_seconds",
    "print_table",
    "quiet_broken_pipe",
]

WIDTH = 48
"""Characters a table cell shows before it is cut (``--full`` shows everything)."""
REFUSED, USAGE, TIMED_OUT = 1, 2, 3


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that shows every option's default and keeps the description's lines.

    An option whose help says its default in words (``default: $ENV``) keeps those
    words; a flag is off unless given and a required option has none.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or action.required or isinstance(action, argparse._StoreTrueAction):
            return text
        return super()._get_help_string(action)


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """``--json`` and ``--full`` of a command that prints a table."""
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document for scripts instead of a table")
    parser.add_argument("--full", action="store_true",
                        help=f"show long values whole instead of cut to {WIDTH} characters")


def cell(value: Any, full: bool) -> str:
    """A value as table text: strings as they are, the rest as JSON; cut unless full."""
    if value is None:
        text = "-"
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, default=repr, sort_keys=True)
    text = text.replace("\n", "\\n")
    if not full and len(text) > WIDTH:
        return text[: WIDTH - 1] + "…"
    return text


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Aligned columns with a header line; the last column is not padded."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for line in [list(headers), *rows]:
        padded = [text.ljust(w) for text, w in zip(line[:-1], widths, strict=False)]
        print("  ".join([*padded, line[-1]]).rstrip())


def emit_json(document: Any) -> None:
    """One JSON document on stdout (values JSON cannot hold become their repr)."""
    print(json.dumps(document, default=repr, indent=2, sort_keys=True))


def json_arg(text: str | None, flag: str) -> Any:
    """The JSON value of an option, or a usage error naming the option."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{flag} is not valid JSON: {exc}") from None


def non_empty(text: str) -> str:
    """A setting that must not be blank (``--redis-url``, ``--prefix``, ``--queue``)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty (leave the option out for the default)")
    return text


def positive_seconds(text: str) -> float:
    """A number of seconds above zero (``--timeout``, ``--interval``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def positive_int(text: str) -> int:
    """A whole number of 1 or more (``--concurrency``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def port(text: str) -> int:
    """A TCP port number, 1 to 65535 (``--port``, ``--metrics-port``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1 to 65535)")
    return value


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(text: str) -> str:
    """A logging level name, upper-cased (``--loglevel``)."""
    level = text.strip().upper()
    if level not in _LEVELS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a log level: use one of {', '.join(_LEVELS)}")
    return level


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def age(text: str) -> timedelta:
    """An age such as ``90``, ``90s``, ``15m``, ``2h``, ``3d`` or ``1w``."""
    found = _AGE.match(text)
    if found is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an age: use a number with s, m, h, d or w (e.g. 15m, 2h, 3d)")
    return timedelta(seconds=float(found.group(1)) * _UNIT[found.group(2)])


def exit_status(command: str, exc: BaseException) -> int:
    """Print a handled error the way every command does; its exit status."""
    print(f"durable-graph {command}: {exc}", file=sys.stderr)
    if isinstance(exc, (ThreadNotFoundError, ThreadStateError, ThreadBusyError)):
        return REFUSED
    return USAGE


def quiet_broken_pipe() -> int:
    """After the reader of stdout went away (``| head``): no traceback, no flush error."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 0
