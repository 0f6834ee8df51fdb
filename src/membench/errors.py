"""The one exception type that reaches the user: its message is the whole one-line error."""


class MembenchError(Exception):
    """A problem the user can act on (bad input, missing privilege, unreachable server).

    The CLI prints `membench: <message>` and exits non-zero; the message must never contain keys or values.
    """

    exit_code = 2


class StoppedEarly(MembenchError):
    """Stopped by a signal before the input's end (a capture file read in part): what was done is kept, and the
    message says so, but the command did not do what it was asked."""

    exit_code = 1
