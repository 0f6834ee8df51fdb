# Codes and tables of the compiled pipeline, all read from the Python specification at import: an enum member is
# its position in its enum, and every rule table (which replies answer a command, what HD means, the binary
# opcodes) is the specification's own table turned into bit masks. Nothing here is decided twice.

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from membench.profile.outcomes import REPLY_STATUS
from membench.profile.schema import Status
from membench.protocol import binary as _binary_spec
from membench.protocol.events import Command, Protocol, Reply
from membench.record import pairing as _pairing_spec

COMMANDS = list(Command)
REPLIES = list(Reply)
STATUSES = list(Status)
PROTOCOLS = list(Protocol)

cdef enum:
    NONE = 255  # an absent enum field (effect)
    P_TEXT = 0
    P_META = 1
    P_BINARY = 2
    FAMILY_NONE = 0
    FAMILY_GET = 1
    FAMILY_STORE = 2
    FAMILY_APPEND = 3
    FAMILY_DELETE = 4
    FAMILY_ARITH = 5
    FAMILY_TOUCH = 6
    FAMILY_GAT = 7


cdef inline int _code(member) except -1:
    return list(type(member)).index(member)


assert [_code(p) for p in (Protocol.TEXT, Protocol.META, Protocol.BINARY)] == [P_TEXT, P_META, P_BINARY]

cdef int C_GET = _code(Command.GET), C_GETS = _code(Command.GETS), C_GAT = _code(Command.GAT)
cdef int C_GATS = _code(Command.GATS), C_SET = _code(Command.SET), C_ADD = _code(Command.ADD)
cdef int C_REPLACE = _code(Command.REPLACE), C_APPEND = _code(Command.APPEND), C_PREPEND = _code(Command.PREPEND)
cdef int C_CAS = _code(Command.CAS), C_DELETE = _code(Command.DELETE), C_INCR = _code(Command.INCR)
cdef int C_DECR = _code(Command.DECR), C_TOUCH = _code(Command.TOUCH), C_QUIT = _code(Command.QUIT)
cdef int C_STATS = _code(Command.STATS), C_OTHER = _code(Command.OTHER), C_META_GET = _code(Command.META_GET)
cdef int C_META_ARITHMETIC = _code(Command.META_ARITHMETIC)

cdef int R_VALUE = _code(Reply.VALUE), R_END = _code(Reply.END), R_MISS = _code(Reply.MISS), R_HD = _code(Reply.HD)
cdef int R_STORED = _code(Reply.STORED), R_NOT_STORED = _code(Reply.NOT_STORED), R_EXISTS = _code(Reply.EXISTS)
cdef int R_NOT_FOUND = _code(Reply.NOT_FOUND), R_DELETED = _code(Reply.DELETED), R_TOUCHED = _code(Reply.TOUCHED)
cdef int R_OK = _code(Reply.OK), R_NUMBER = _code(Reply.NUMBER), R_STAT = _code(Reply.STAT)
cdef int R_NOOP = _code(Reply.NOOP), R_OTHER = _code(Reply.OTHER), R_SERVER_ERROR = _code(Reply.SERVER_ERROR)

cdef int S_HIT = _code(Status.HIT), S_MISS = _code(Status.MISS), S_OK = _code(Status.OK)
cdef int S_NOREPLY = _code(Status.NOREPLY), S_UNANSWERED = _code(Status.UNANSWERED)


cdef uint32_t _replies(replies) except? 0:
    cdef uint32_t mask = 0
    for reply in replies:
        mask |= 1u << _code(reply)
    return mask


cdef uint64_t _commands(commands) except? 0:
    cdef uint64_t mask = 0
    for command in commands:
        mask |= 1ull << _code(command)
    return mask


cdef uint32_t ERROR_REPLIES = _replies(_pairing_spec._ERRORS)
cdef uint32_t HIT_REPLIES = _replies(_pairing_spec._HIT_REPLIES)
cdef uint64_t GET_FAMILY = _commands(_pairing_spec._GET_FAMILY)
cdef uint64_t MULTI_UNIT = _commands(_pairing_spec._MULTI_UNIT)
cdef uint64_t QUIET_META_COMMANDS = _commands(_pairing_spec._QUIET_META_ANSWERS)

cdef uint32_t[64] ANSWERS  # command -> replies that can answer it
cdef uint32_t[64] QUIET_META_ANSWERS  # quiet meta command -> replies it still sends whatever its flags
cdef uint8_t[64][4] FLAG_LETTER  # quiet meta command -> flag letters that make more replies possible
cdef uint32_t[64][4] FLAG_ANSWERS  # ... and those replies
cdef uint8_t[64] SUPPRESSED  # command -> status of a quiet command whose reply never came
cdef uint8_t[64] HD_STATUS  # command -> status a meta HD means
cdef uint8_t[32] REPLY_STATUS_CODE  # reply -> status


def _fill_tables():
    for command in Command:
        code = _code(command)
        ANSWERS[code] = _replies(_pairing_spec._ANSWERS.get(command, ()))
        QUIET_META_ANSWERS[code] = _replies(_pairing_spec._QUIET_META_ANSWERS.get(command, ()))
        SUPPRESSED[code] = _code(_pairing_spec._SUPPRESSED[command])
        HD_STATUS[code] = _code(_pairing_spec._HD_STATUS[command])
        rules = _pairing_spec._QUIET_META_FLAG_ANSWERS.get(command, ())
        assert len(rules) <= 4
        for i in range(4):
            FLAG_LETTER[code][i] = rules[i][0] if i < len(rules) else 0
            FLAG_ANSWERS[code][i] = _replies(rules[i][1]) if i < len(rules) else 0
    for reply in Reply:
        REPLY_STATUS_CODE[_code(reply)] = _code(REPLY_STATUS[reply]) if reply in REPLY_STATUS else S_OK


_fill_tables()
assert len(COMMANDS) <= 64 and len(REPLIES) <= 32


# Binary opcodes, from binary.py's OPCODES.
cdef uint8_t[256] OP_KNOWN
cdef uint8_t[256] OP_COMMAND
cdef uint8_t[256] OP_QUIET
cdef uint8_t[256] OP_KEYED
cdef uint8_t[256] OP_FAMILY
cdef uint32_t[256] OP_EXTRAS  # bit n: a request may carry n bytes of extras (n < 32)
cdef uint8_t[256] SUCCESS_BY_COMMAND  # keyless commands' success reply, NONE for "other"
cdef uint8_t[65536] ERROR_STATUS_REPLY  # binary status -> reply, NONE where unknown
_FAMILIES = {"": FAMILY_NONE, "get": FAMILY_GET, "store": FAMILY_STORE, "append": FAMILY_APPEND,
             "delete": FAMILY_DELETE, "arith": FAMILY_ARITH, "touch": FAMILY_TOUCH, "gat": FAMILY_GAT}


def _fill_opcodes():
    for opcode in range(256):
        kind = _binary_spec.OPCODES.get(opcode, _binary_spec._UNKNOWN)
        OP_KNOWN[opcode] = opcode in _binary_spec.OPCODES
        OP_COMMAND[opcode] = _code(kind.command)
        OP_QUIET[opcode] = kind.quiet
        OP_KEYED[opcode] = kind.keyed
        OP_FAMILY[opcode] = _FAMILIES[kind.family]
        OP_EXTRAS[opcode] = sum(1 << n for n in kind.request_extras)
    for command in Command:
        reply = _binary_spec._SUCCESS_BY_COMMAND.get(command)
        SUCCESS_BY_COMMAND[_code(command)] = NONE if reply is None else _code(reply)
    for status in range(65536):
        reply = _binary_spec.ERROR_STATUS.get(status)
        ERROR_STATUS_REPLY[status] = NONE if reply is None else _code(reply)


_fill_opcodes()

cdef uint8_t[8] SUCCESS_BY_FAMILY


def _fill_families():
    for name, family in _FAMILIES.items():
        reply = _binary_spec._SUCCESS_REPLY.get(name)
        SUCCESS_BY_FAMILY[family] = NONE if reply is None else _code(reply)


_fill_families()
