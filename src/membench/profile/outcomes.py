"""What a reply says about an operation's outcome: one rulebook for recording (pairing) and replay statistics.

Keeping it in one place means a replayed hit, miss or stored counts exactly as a recorded one does.
"""

from __future__ import annotations

from membench.profile.schema import Status
from membench.protocol.events import RETRIEVAL_COMMANDS, STORAGE_COMMANDS, Command, Reply

DELETES = frozenset({Command.DELETE, Command.META_DELETE})

REPLY_STATUS: dict[Reply, Status] = {
    Reply.VALUE: Status.HIT,
    Reply.MISS: Status.MISS,
    Reply.HD: Status.OK,  # what meta HD means depends on the command: see success_status
    Reply.STORED: Status.STORED,
    Reply.NOT_STORED: Status.NOT_STORED,
    Reply.EXISTS: Status.EXISTS,
    Reply.NOT_FOUND: Status.NOT_FOUND,
    Reply.DELETED: Status.DELETED,
    Reply.TOUCHED: Status.TOUCHED,
    Reply.OK: Status.OK,
    Reply.NUMBER: Status.OK,
    Reply.VERSION: Status.OK,
    Reply.NOOP: Status.OK,
    Reply.END: Status.OK,
    Reply.STAT: Status.OK,
    Reply.DEBUG: Status.OK,
    Reply.OTHER: Status.OK,
    Reply.ERROR: Status.ERROR,
    Reply.CLIENT_ERROR: Status.CLIENT_ERROR,
    Reply.SERVER_ERROR: Status.SERVER_ERROR,
}


def success_status(command: Command) -> Status:
    """The outcome a bare success (meta HD) means for this command."""
    if command in RETRIEVAL_COMMANDS:
        return Status.HIT
    if command in STORAGE_COMMANDS:
        return Status.STORED
    if command in DELETES:
        return Status.DELETED
    if command is Command.TOUCH:
        return Status.TOUCHED
    return Status.OK


def suppressed_status(command: Command) -> Status:
    """The outcome of a quiet command whose reply never came: quiet gets hide misses, everything else successes."""
    return Status.MISS if command in RETRIEVAL_COMMANDS else success_status(command)
