"""The terminal side of the CLI: consoles that survive a reader going away, standard streams that exist, and
warnings as one line."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TextIO, cast

from rich.console import Console

# Piped or logged output has no width to fit: tables keep their natural width, so no number is ever cut.
_UNBOUNDED_WIDTH = 10_000


@contextlib.contextmanager
def _failure_as_broken_pipe() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as error:
        raise BrokenPipeError(error.errno, error.strerror) from error


class _WriteFailureAsBrokenPipe:
    """A text stream whose failed writes read as a broken pipe: output that cannot be written (`2>/dev/full`, a
    full disk behind `2>log`) is as lost as output nobody reads, and must not stop the work either."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        with _failure_as_broken_pipe():
            return self._stream.write(text)

    def flush(self) -> None:
        with _failure_as_broken_pipe():
            self._stream.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


class ReaderSafeConsole(Console):
    """A console whose reader may go away (`| head`, `| true`) or whose output cannot be written (`2>/dev/full`):
    from then on its output is dropped, and `reader_gone` says so. Rich's own handling exits at once (SystemExit,
    and /dev/null put on stdout whichever stream broke), before the result files a command was asked for are
    written, and it lets other write errors end the command."""

    reader_gone = False

    def on_broken_pipe(self) -> None:
        self.quiet = True
        self.reader_gone = True
        # What is left in the stream's buffer would fail again when Python flushes it at exit, printing an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.file.fileno())
        os.close(devnull)


def console_on(stream: TextIO) -> ReaderSafeConsole:
    width = None if stream.isatty() else _UNBOUNDED_WIDTH
    # No markup: text from profiles (sources, command and counter names) is shown as it is, never interpreted.
    return ReaderSafeConsole(file=cast(TextIO, _WriteFailureAsBrokenPipe(stream)), width=width, highlight=False,
                             soft_wrap=True, markup=False)


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """Warnings as one line a user can read, not Python's two lines with a source path."""
    with contextlib.suppress(OSError):  # stderr cannot be written: the warning is lost, and the work goes on
        print(f"membench: warning: {message}", file=sys.stderr)


def hold_standard_streams() -> None:
    """Started with stdin, stdout or stderr closed (`>&-`), the process gets /dev/null there instead, as if run
    with `>/dev/null`: a free descriptor 0-2 would be reused by the next file or socket opened (libuv aborts on
    closing such a socket; a print would land in it), and Python leaves sys.stdout or sys.stderr None."""
    for descriptor, name in enumerate(("stdin", "stdout", "stderr")):
        try:
            os.fstat(descriptor)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one, as those below are open
            setattr(sys, name, os.fdopen(descriptor, "r" if descriptor == 0 else "w"))
