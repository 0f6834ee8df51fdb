"""The `membench` command: parses arguments and calls the pipeline stages. No logic of its own beyond wiring."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

from rich.console import Console

from membench import __version__
from membench.argtypes import VersionAction, nonempty_path, port, positive_float, positive_int
from membench.errors import MembenchError, StoppedEarly
from membench.terminal import ReaderSafeConsole, console_on, hold_standard_streams, show_warning

DEFAULT_PORT = 11211
MAX_SALT_FILE_BYTES = 65_536

# membench does no linear algebra, yet OpenBLAS (numpy loads it) starts a worker thread per core, and those spin
# for a while after loading: on a small machine that is CPU taken from memcached and the capture. Set before any
# subcommand imports numpy; a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

RECORD_EXAMPLES = """\
sources:
  ebpf:any             every process's TCP sockets on the watched ports (socket-level eBPF, root)
  ebpf:pid=1234        only process 1234 (e.g. the memcached server); ebpf:pid=1,2 for several
  FILE                 a pcap or pcapng file (Ethernet, VLAN, Linux cooked, loopback, raw IP)
  INTERFACE            live packet capture on an interface (root): lo, eth0, any

examples:
  sudo membench record ebpf:any out.profile
  sudo membench record ebpf:any out.profile --port 11211 --port 11212 --duration 60
  sudo membench record ebpf:pid=1234 out.profile
  sudo membench record ebpf:any out.profile --side client
  membench record capture.pcap out.profile
  sudo membench record lo out.profile --port 11211 --duration 30
  membench record capture.pcap out.profile --salt-file team.salt   # same keys, same hashes across recordings
  MEMBENCH_SALT="$TEAM_SECRET" membench record capture.pcap out.profile   # the same, from the environment
"""

ANALYZE_EXAMPLES = """\
examples:
  membench analyze out.profile
  membench analyze out.profile --json stats.json
  membench analyze out.profile --html report.html
"""

REPLAY_EXAMPLES = """\
examples:
  membench replay out.profile                                   # localhost:11211, as fast as order allows
  membench replay out.profile --target 10.0.0.5:11211 --target 10.0.0.6:11211   # ketama, like libmemcached
  membench replay out.profile --timing original --speed 2       # recorded inter-arrival times, twice as fast
  membench replay out.profile --rate 50000                      # open loop at a fixed aggregate rate
  membench replay out.profile --protocol meta --loop 3 --json result.json
  membench replay /shared/out.profile --cluster ray://head:10001 --target 10.0.0.5:11211   # from every Ray node
"""


TOP_EXAMPLES = """\
keys while it runs:
  k   sort the hottest keys by ops, bytes or misses      c   sort the connections by ops, bytes or p99
  q   quit (also Ctrl+C)

examples:
  sudo membench top ebpf:any                       # every process's memcached traffic on port 11211
  sudo membench top ebpf:pid=1234 --port 11212
  sudo membench top lo --port 11211 --interval 2
  sudo membench top ebpf:any --show-keys            # real keys on screen (never written anywhere)
"""

IMPORT_EXAMPLES = """\
examples:
  membench import twitter cluster52.sort trace.profile --salt-file team.salt
  membench import oracle-general w44.oracleGeneral trace.profile
  membench import kvtrace kvcache_traces_1.csv trace.profile
  membench analyze trace.profile
  membench export out.profile oracle-general out.oracleGeneral   # for libCacheSim's cachesim
  membench export out.profile csv out.csv
"""

MERGE_EXAMPLES = """\
examples (each node recorded with the same salt):
  membench merge node1.profile node2.profile node3.profile -o fleet.profile
  membench analyze fleet.profile
  membench replay fleet.profile --target 10.0.0.5:11211 --target 10.0.0.6:11211
"""


class _OneLineErrorParser(argparse.ArgumentParser):
    """Wrong arguments get the same one-line error as every other mistake, pointing at --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"membench: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(
        prog="membench",
        description="Record memcached traffic as an anonymized profile, analyze it, and replay it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="run `membench COMMAND --help` for examples",
    )
    parser.add_argument("--version", action=VersionAction, version=f"membench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_OneLineErrorParser)

    record = commands.add_parser(
        "record", help="capture traffic into a profile", epilog=RECORD_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Capture memcached traffic and write an anonymized profile (key hashes and sizes only).",
    )
    record.add_argument("source", help="ebpf:any, ebpf:pid=PID[,PID...], a pcap/pcapng file, or an interface")
    record.add_argument("output", type=nonempty_path, help="profile directory to create")
    record.add_argument("--port", "-p", type=port, action="append", dest="ports", metavar="PORT",
                        help=f"memcached server port to watch (repeatable; default {DEFAULT_PORT})")
    record.add_argument("--duration", "-d", type=positive_float, metavar="SECONDS",
                        help="stop after this many seconds (live sources); default: until Ctrl+C or SIGTERM")
    record.add_argument("--side", choices=("server", "client"), default="server",
                        help="eBPF: record at the server's sockets (default) or at the clients'")
    salt = record.add_mutually_exclusive_group()
    salt.add_argument("--salt-file", type=nonempty_path, metavar="FILE",
                      help="derive the key-hash salt from the passphrase in FILE (or the environment variable "
                           "MEMBENCH_SALT) so hashes are reproducible across recordings (default: a random salt, "
                           "never stored)")
    salt.add_argument("--salt", metavar="PASSPHRASE",
                      help="the same from the command line, where every user of the machine can read it (ps)")
    record.add_argument("--force", action="store_true", help="overwrite an existing profile")
    record.add_argument("--quiet", "-q", action="store_true", help="no live status line")

    analyze = commands.add_parser(
        "analyze", help="report on a profile", epilog=ANALYZE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Summarize a profile: load, command mix, hit ratios, sizes, hot keys, latency, capture health.",
    )
    analyze.add_argument("profile", type=nonempty_path)
    analyze.add_argument("--json", type=nonempty_path, metavar="FILE", help="also write the numbers as JSON")
    analyze.add_argument("--html", type=nonempty_path, metavar="FILE", help="also write a self-contained HTML report")

    replay = commands.add_parser(
        "replay", help="replay a profile against memcached", epilog=REPLAY_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Turn a profile back into load, keeping connections, per-connection order and timing.",
    )
    _add_replay_arguments(replay)

    _add_top_parser(commands)

    _add_merge_parser(commands)
    _add_trace_parsers(commands)
    return parser


def _add_merge_parser(commands: argparse._SubParsersAction[_OneLineErrorParser]) -> None:
    merge = commands.add_parser(
        "merge", help="join the profiles of several nodes into one", epilog=MERGE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Join profiles recorded node by node with one salt: connections renumbered per node, rows "
                    "on one time axis, health summed.",
    )
    merge.add_argument("profiles", type=nonempty_path, nargs="+", metavar="PROFILE")
    merge.add_argument("--output", "-o", type=nonempty_path, required=True, help="profile directory to create")
    merge.add_argument("--force", action="store_true", help="overwrite an existing profile")


def _add_trace_parsers(commands: argparse._SubParsersAction[_OneLineErrorParser]) -> None:
    importing = commands.add_parser(
        "import", help="turn a public cache trace into a profile", epilog=IMPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read a libCacheSim oracleGeneral, Twitter cache-trace or CacheLib kvtrace file into a profile "
                    "that analyze and replay take.")
    importing.add_argument("format", choices=("oracle-general", "twitter", "kvtrace"))
    importing.add_argument("trace", type=nonempty_path)
    importing.add_argument("output", type=nonempty_path, help="profile directory to create")
    salt = importing.add_mutually_exclusive_group()
    salt.add_argument("--salt-file", type=nonempty_path, metavar="FILE",
                      help="hash the trace's keys with this passphrase")
    salt.add_argument("--salt", metavar="PASSPHRASE", help="the same from the command line (visible in ps)")
    importing.add_argument("--force", action="store_true", help="overwrite an existing profile")
    exporting = commands.add_parser(
        "export", help="write a profile as a public cache trace", epilog=IMPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a profile's keyed operations as libCacheSim oracleGeneral or Twitter-style CSV.")
    exporting.add_argument("profile", type=nonempty_path)
    exporting.add_argument("format", choices=("oracle-general", "csv"))
    exporting.add_argument("output", type=nonempty_path, help="trace file to create")
    exporting.add_argument("--force", action="store_true", help="overwrite an existing trace file")


def _add_top_parser(commands: argparse._SubParsersAction[_OneLineErrorParser]) -> None:
    top = commands.add_parser(
        "top", help="watch live traffic: rates, hit ratio, latency, hot keys", epilog=TOP_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A live view of memcached traffic, refreshed every interval; nothing is written to disk.",
    )
    top.add_argument("source", help="ebpf:any, ebpf:pid=PID[,PID...], or an interface")
    top.add_argument("--port", "-p", type=port, action="append", dest="ports", metavar="PORT",
                     help=f"memcached server port to watch (repeatable; default {DEFAULT_PORT})")
    top.add_argument("--interval", "-i", type=positive_float, default=1.0, metavar="SECONDS",
                     help="refresh every SECONDS (default 1)")
    top.add_argument("--limit", "-n", type=positive_int, default=10, metavar="ROWS", help="rows per table (default 10)")
    top.add_argument("--duration", "-d", type=positive_float, metavar="SECONDS", help="stop after SECONDS")
    top.add_argument("--side", choices=("server", "client"), default="server",
                     help="eBPF: watch the server's sockets (default) or the clients'")
    top.add_argument("--show-keys", action="store_true",
                     help="show real keys instead of hashes (hot keys only; on screen, never written)")


def _add_replay_arguments(replay: argparse.ArgumentParser) -> None:
    from membench.replay.options import add_replay_arguments

    add_replay_arguments(replay)


def main(argv: Sequence[str] | None = None) -> int:
    hold_standard_streams()
    warnings.showwarning = show_warning
    args = build_parser().parse_args(argv)
    console = console_on(sys.stderr)
    try:
        if args.command == "record":
            return _record(args, console)
        if args.command == "analyze":
            return _analyze(args)
        if args.command == "merge":
            return _merge(args, console)
        if args.command == "top":
            return _top(args)
        if args.command in ("import", "export"):
            return _traces(args, console)
        return _replay(args, console)
    except MembenchError as error:
        console.print(f"membench: {error}", markup=False)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except OSError as error:  # the machine's answer (no permission, a full disk), not a bug: one line
        where = f"{error.filename}: " if error.filename else ""
        console.print(f"membench: {where}{error.strerror or error}", markup=False)
        return 2
    except Exception as error:  # a bug: still one line, unless the user asks for the traceback
        if os.environ.get("MEMBENCH_DEBUG"):
            traceback.print_exc()
        else:
            console.print(f"membench: internal error: {type(error).__name__}: {error} "
                          "(set MEMBENCH_DEBUG=1 for the traceback)", markup=False)
        return 70


def _record(args: argparse.Namespace, console: ReaderSafeConsole) -> int:
    from membench.record.process_setup import prepare_recording_process

    prepare_recording_process()
    from membench.capture.open import open_source
    from membench.profile.metadata import ProfileMetadata
    from membench.profile.writer import ProfileWriter
    from membench.record.anonymize import KeyHasher, SaltKdf
    from membench.record.recorder import Recorder
    from membench.record.status import RecordStatus, explain_capture, print_summary

    ports = tuple(args.ports or (DEFAULT_PORT,))
    passphrase = _passphrase(args, console)
    kdf = SaltKdf() if passphrase is not None else None
    hasher = KeyHasher.random() if kdf is None else KeyHasher.from_passphrase(passphrase, kdf)
    source = open_source(args.source, ports, side=args.side, duration=args.duration)
    metadata = ProfileMetadata(source=source.name, ports=list(ports), salt_fingerprint=hasher.fingerprint,
                               salt_kdf=None if kdf is None else kdf.as_dict())
    status = None if args.quiet or not sys.stderr.isatty() else RecordStatus(console)
    open_writer = ProfileWriter if source.live else ProfileWriter.for_input_file
    with open_writer(args.output, metadata, overwrite=args.force) as writer:
        recorder = Recorder(source, writer, hasher, on_progress=status)

        def stop(_signum: int, _frame: FrameType | None) -> None:
            recorder.stop()

        # SIGHUP too: a closed terminal or a dropped ssh session ends the recording as Ctrl+C would, not by killing
        # it with its last second unwritten and the profile marked incomplete.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, stop)
        port_list = ", ".join(map(str, ports))
        console.print(f"recording {source.name} (port {port_list}) into {args.output}; Ctrl+C to stop",
                      markup=False)
        summary = recorder.run()
        if status is not None:
            status.clear()
        if summary.health.get("capture", {}).get("stopped_before_end"):
            raise StoppedEarly(f"stopped before the end of {args.source}: the profile keeps the "
                               f"{summary.operations:,} operations read until then, and is marked incomplete")
    print_summary(console, args.output, summary)
    explain_capture(console, summary.health.get("capture", {}), source.name, port_list)
    return 1 if console.reader_gone else 0  # the profile is whole, but its summary reached nobody


def _traces(args: argparse.Namespace, console: Console) -> int:
    from membench.record.anonymize import KeyHasher
    from membench.traces.load import export_profile, import_trace

    if args.command == "export":
        written = export_profile(args.format, args.profile, args.output, args.force)
        console.print(f"wrote {written:,} requests to {args.output}", markup=False)
        return 0
    passphrase = _passphrase(args, console)
    hasher = KeyHasher.random() if passphrase is None else KeyHasher.from_passphrase(passphrase)
    summary = import_trace(args.format, args.trace, args.output, hasher, args.force)
    problems = ", ".join(f"{name.replace('_', ' ')} {count:,}" for name, count in summary.health.items())
    console.print(f"imported {summary.operations:,} operations into {args.output}"
                  + (f"; counted in its health: {problems}" if problems else ""), markup=False)
    if not summary.operations:
        # As record does for a capture with nothing on the port: the empty profile is a true account of the
        # input, so the import succeeded, but "imported 0 operations" alone reads like a quiet bug.
        readable = " that could be read" if problems else ""
        console.print(f"membench: warning: the trace {args.trace} holds no requests{readable}: the profile "
                      f"{args.output} is empty", markup=False)
    return 0


def _top(args: argparse.Namespace) -> int:
    from membench.capture.open import open_source
    from membench.record.anonymize import KeyHasher
    from membench.top.run import TopOptions, run_top

    ports = tuple(args.ports or (DEFAULT_PORT,))
    if Path(args.source).is_file():
        raise MembenchError(f"top watches live traffic; for the capture file {args.source} use `membench record` "
                            "and `membench analyze`")
    source = open_source(args.source, ports, side=args.side, duration=args.duration)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM ends the view as Ctrl+C does
    options = TopOptions(interval_s=args.interval, limit=args.limit, show_keys=args.show_keys)
    run_top(source, KeyHasher.random(), options, Console())
    return 0


def _passphrase(args: argparse.Namespace, console: Console) -> str | None:
    """The salt passphrase from --salt-file, MEMBENCH_SALT or --salt (warned of: `ps` shows it); None for none."""
    if args.salt_file is not None:
        try:
            with args.salt_file.open("rb") as file:
                held = file.read(MAX_SALT_FILE_BYTES + 1)  # bounded: /dev/zero, or a wrong file, never ends
            if len(held) > MAX_SALT_FILE_BYTES:
                raise MembenchError(f"--salt-file {args.salt_file}: more than {MAX_SALT_FILE_BYTES:,} bytes, "
                                    "not a passphrase")
            passphrase = held.decode("utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else str(error)
            raise MembenchError(f"--salt-file {args.salt_file}: {reason}") from None
        if not passphrase:
            raise MembenchError(f"--salt-file {args.salt_file}: the file holds no passphrase")
        return passphrase
    if args.salt is not None:
        if not args.salt:
            raise MembenchError("--salt: the passphrase is empty")
        console.print("membench: warning: --salt is visible to every user of this machine (ps); use --salt-file or "
                      "MEMBENCH_SALT", markup=False)
        return args.salt
    return os.environ.get("MEMBENCH_SALT") or None


def _analyze(args: argparse.Namespace) -> int:
    from membench.analyze import analyze_profile, render_terminal, write_html, write_json
    from membench.outputs import check_apart, check_writable
    from membench.profile.reader import ProfileReader

    check_writable(args.json, "--json")
    check_writable(args.html, "--html")
    check_apart(args.profile, {"--json": args.json, "--html": args.html})
    reader = ProfileReader(args.profile)
    report = analyze_profile(reader)
    console = console_on(sys.stdout)
    render_terminal(report, console)
    if args.json:
        write_json(report, args.json)
    if args.html:
        write_html(report, args.html)
    return 1 if console.reader_gone else 0  # the files are written, but the table reached nobody


def _merge(args: argparse.Namespace, console: Console) -> int:
    from membench.profile.merge import merge_profiles

    summary = merge_profiles(args.profiles, args.output, overwrite=args.force)
    console.print(f"merged {summary.operations:,} operations of {summary.nodes} nodes ({summary.connections:,} "
                  f"connections) -> {args.output}", markup=False)
    return 0


def _replay(args: argparse.Namespace, console: ReaderSafeConsole) -> int:
    from membench.outputs import check_apart
    from membench.replay.options import options_from_args
    from membench.replay.run import run_replay

    options = options_from_args(args)
    check_apart(args.profile, {"--json": options.json_path, "--hdr-log": options.hdr_log_path,
                               "--memtier-json": options.memtier_json_path})
    result = run_replay(args.profile, options, console)
    return 0 if result.completed and not console.reader_gone else 1
