"""argparse value types shared by every subcommand, so a bad number reads the same wherever it is given, and the
CLI's one action of its own (`--version`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from membench.extensions import describe


def port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"port out of range: {text}" if text.isdigit()
                                         else f"not a port number: {text!r}")
    return int(text)


LARGEST_COUNT = 10**9  # beyond it a count is a typo, and it would not fit the C integers it ends up in


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    if int(text) > LARGEST_COUNT:
        raise argparse.ArgumentTypeError(f"must be at most {LARGEST_COUNT:,}: {text}")
    return int(text)


def count_up_to(maximum: int, what: str) -> Callable[[str], int]:
    """positive_int with a smaller ceiling, for counts that cost a socket or a process each."""

    def parse(text: str) -> int:
        value = positive_int(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"at most {maximum:,} {what}, not {text}")
        return value

    return parse


LARGEST = 1e9  # seconds (31 years), ops/s or a speed factor: beyond it, a value is a typo or a wish for "never"


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    if not value <= LARGEST:
        raise argparse.ArgumentTypeError(f"must be at most {LARGEST:.0e}: {text}")
    return value


def nonempty_path(text: str) -> Path:
    """A path argument; an empty one is refused, since pathlib reads "" as "." and would act on the current
    directory (and name it "." in every message)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)


class VersionAction(argparse.Action):
    """`--version`, which says which implementation runs: importing every twin to tell costs a tenth of a second,
    paid only when asked, not at every start of the CLI."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, version: str = "",
                 help: str | None = "show the version and which implementation runs, and exit") -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)
        self.version = version

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        sys.stdout.write(f"{self.version} ({describe()})\n")
        parser.exit()
