"""An empty path argument is a usage error, for every path-typed argument of every command: pathlib reads "" as
".", so it was shown as "." in messages and taken as the current directory."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from membench.cli import build_parser
from tests.conftest import PCAP_CORPUS, run_membench
from tests.profile.parts import salted_profile

CAPTURE = str(PCAP_CORPUS / "memcache_text_tcp_single_load_store.pcap")
# Each path-typed argument (command, argparse dest) and a command line with "" there, every other argument real.
EMPTY_PATHS: dict[tuple[str, str], list[str]] = {
    ("record", "output"): ["record", CAPTURE, ""],
    ("record", "salt_file"): ["record", CAPTURE, "{tmp}/r.profile", "--salt-file", ""],
    ("analyze", "profile"): ["analyze", ""],
    ("analyze", "json"): ["analyze", "{profile}", "--json", ""],
    ("analyze", "html"): ["analyze", "{profile}", "--html", ""],
    ("replay", "profile"): ["replay", ""],
    ("replay", "json_path"): ["replay", "{profile}", "--json", ""],
    ("replay", "hdr_log_path"): ["replay", "{profile}", "--hdr-log", ""],
    ("replay", "memtier_json_path"): ["replay", "{profile}", "--memtier-json", ""],
    ("merge", "profiles"): ["merge", "{profile}", "", "-o", "{tmp}/m.profile"],
    ("merge", "output"): ["merge", "{profile}", "{profile}", "-o", ""],
    ("import", "trace"): ["import", "twitter", "", "{tmp}/i.profile"],
    ("import", "output"): ["import", "twitter", "{tmp}/t.csv", ""],
    ("import", "salt_file"): ["import", "twitter", "{tmp}/t.csv", "{tmp}/i.profile", "--salt-file", ""],
    ("export", "profile"): ["export", "", "csv", "{tmp}/e.csv"],
    ("export", "output"): ["export", "{profile}", "csv", ""],
}


def commands() -> dict[str, argparse.ArgumentParser]:
    (subparsers,) = (action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    return subparsers.choices


def is_path(action: argparse.Action) -> bool:
    """Whether the argument's type makes a path of its text."""
    try:
        return action.type is not None and isinstance(action.type("x"), Path)
    except (argparse.ArgumentTypeError, ValueError):
        return False


def test_every_path_argument_is_covered() -> None:
    found = {(name, action.dest) for name, parser in commands().items() for action in parser._actions
             if is_path(action)}
    assert found == set(EMPTY_PATHS)


@pytest.mark.parametrize(("command", "dest"), sorted(EMPTY_PATHS))
def test_an_empty_path_is_a_one_line_usage_error(tmp_path: Path, command: str, dest: str) -> None:
    profile = salted_profile(tmp_path / "p.profile")
    (tmp_path / "t.csv").write_text("0,k,1,10,c,get,0\n")
    arguments = [argument.format(tmp=tmp_path, profile=profile) for argument in EMPTY_PATHS[command, dest]]
    # Run in an empty directory: where "" is taken as ".", nothing but this directory can be touched.
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    result = run_membench(*arguments, cwd=workdir)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"membench: argument {_shown(command, dest)}: an empty path "
                                          f"(see `membench {command} --help`)"]
    assert not list(workdir.iterdir())


def _shown(command: str, dest: str) -> str:
    """How argparse names the argument in its errors: the option strings, or the positional's name."""
    (action,) = (action for action in commands()[command]._actions if action.dest == dest)
    return "/".join(action.option_strings) or action.metavar or dest
