# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled twin of replay/pass_plan.py's PassPlan and of order.py's KeyOrder: the same groups, numbers and
dependencies from the same rows, with a request's planning in C instead of interpreted Python. A slice's groups
go to each stream as one GroupBlock (record/_core_groups.pxi): rows of C fields and the payloads end to end, where
the specification makes a Group tuple, a payload and a dependency tuple per request.

The rows are read as typed columns; the specification's per-request steps (replies due, the replay connection,
the keys per server, encoding by template, the key order) keep their names here, so the two read side by side.
What stays Python is what is rare: encoding a shape not seen before, multi-server key placement, the heap of a
recorded connection's replies due. MEMBENCH_NO_EXTENSIONS=1 selects the specification.
"""

import heapq

import numpy as np

cimport cython

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

from membench.profile.schema import Status
from membench.protocol.events import RETRIEVAL_COMMANDS, Command, Protocol
from membench.replay.options import Timing
from membench.replay.pass_plan import ABSOLUTE_TTL, NEVER_NS
from membench.record._core import GroupBlock
from membench.replay.requests import CAS_CURRENT, CAS_NONE, CAS_STALE, VALUE_COMMANDS, RequestShape

cdef int64_t NS_PER_US = 1000
cdef int64_t NS_PER_S = 1000000000
cdef int64_t ABSOLUTE_TTL_S = ABSOLUTE_TTL
cdef Py_ssize_t TEMPLATES = 4096  # shapes remembered before starting over, as the encoder does

cdef object _UNSEEN = object()
cdef tuple _NO_DEPENDENCIES = ()
cdef object _BINARY = Protocol.BINARY
cdef object _TEXT = Protocol.TEXT
cdef object _CAS = Command.CAS
cdef object _EXISTS = Status.EXISTS


include "_block_fields.pxi"
include "_order.pxi"
include "_runs.pxi"


cdef class PassPlan:
    """See pass_plan.py's PassPlan."""

    cdef object _context
    cdef list _opaques
    cdef dict _replies_due
    cdef int64_t _requests
    cdef int64_t _planned
    cdef KeyOrder _order
    cdef bint _original
    cdef int64_t _first_ns
    cdef double _speed
    cdef double _rate_step
    cdef bint _track_depth
    cdef object _first_stream  # by replay connection: its stream to target 0 (its targets' follow it), -1: none here
    cdef list _binaries
    cdef object _encoder
    cdef object _continuum
    cdef Py_ssize_t _server_count
    cdef object _recorded  # the recorded connections, sorted: a connection's place is its recorded index
    cdef int64_t _recorded_count
    cdef int64_t _replay_count
    cdef dict _templates  # (protocol, *request shape, key length) -> template
    cdef list _shapes  # per command code: a _ShapeMemo of its latest request
    cdef list _runs  # per stream: its groups of the slice being planned (a _Run, or None before its first)
    cdef list _touched  # the streams the slice gave groups to, in the order of their first

    def __init__(self, context, Py_ssize_t streams, bint ordered):
        self._context = context
        self._opaques = [0] * streams
        self._replies_due = {}
        self._requests = 0
        self._planned = 0
        self._order = KeyOrder() if ordered else None
        self._original = context.timing is Timing.ORIGINAL
        self._first_ns = context.first_ns
        self._speed = context.speed
        self._rate_step = context.rate_step_ns
        self._track_depth = context.pipeline is None
        self._binaries = list(context.binaries)
        self._encoder = context.encoder
        self._continuum = context.continuum
        self._server_count = context.continuum.server_count
        self._recorded = _sorted_places(context.connections.recorded_index)
        self._recorded_count = context.connections.recorded_count
        self._replay_count = context.connections.replay_count
        self._templates = {}
        self._shapes = []
        self._runs = [None] * streams
        self._touched = []
        self._first_stream = np.full(self._replay_count, -1, dtype=np.int64)
        for (connection, target), stream in context.stream_of.items():
            if target == 0:
                self._first_stream[connection] = stream
        for (connection, target), stream in context.stream_of.items():
            if self._first_stream[connection] + target != stream:
                raise ValueError("a connection's streams must follow each other, target by target")

    def plan(self, rows, list keys, names):
        """(stream index, its next groups in order) for the streams this slice gives requests to."""
        cdef Py_ssize_t count = len(rows.request)
        cdef const int64_t[::1] timestamp_ns = np.ascontiguousarray(rows.timestamp_ns, dtype=np.int64)
        cdef const int64_t[::1] connection = np.ascontiguousarray(rows.connection, dtype=np.int64)
        cdef const int64_t[::1] recorded_index = self._recorded_indexes(rows.connection)
        cdef const int64_t[::1] first_streams = self._first_stream
        cdef int64_t first_stream
        cdef const int64_t[::1] command_code = np.ascontiguousarray(rows.command, dtype=np.int64)
        cdef const int64_t[::1] protocol_code = np.ascontiguousarray(rows.protocol, dtype=np.int64)
        cdef const uint64_t[::1] key_hash = np.ascontiguousarray(rows.key_hash, dtype=np.uint64)
        cdef const int64_t[::1] latency_us = np.ascontiguousarray(rows.latency_us, dtype=np.int64)
        cdef const uint8_t[::1] quiet = np.ascontiguousarray(rows.quiet, dtype=np.uint8)
        cdef const int64_t[::1] status_code = np.ascontiguousarray(rows.status, dtype=np.int64)
        cdef const int64_t[::1] value_length = np.ascontiguousarray(rows.value_length, dtype=np.int64)
        cdef const int64_t[::1] flags = np.ascontiguousarray(rows.flags, dtype=np.int64)
        cdef const int64_t[::1] ttl = np.ascontiguousarray(rows.ttl, dtype=np.int64)
        cdef const uint64_t[::1] delta = np.ascontiguousarray(rows.delta, dtype=np.uint64)
        cdef list initial = rows.initial.tolist()
        cdef list intended = None
        cdef list starts = rows.request_starts()
        cdef Py_ssize_t index, start, end
        cdef int64_t outstanding, at_ns, code
        cdef _Slice codes = _Slice(names, self._context.slots)
        for index in self._touched:  # a slice that failed half planned leaves nothing behind
            (<_Run>self._runs[index]).clear()
        self._touched = []
        if self._original:
            with np.errstate(over="ignore"):  # beyond float range: saturated anyway
                intended = np.minimum((rows.timestamp_ns - self._first_ns) / self._speed, NEVER_NS).astype(
                    np.int64).tolist()
        for index in range(len(starts)):
            start = starts[index]
            end = starts[index + 1] if index + 1 < len(starts) else count
            outstanding = self._outstanding(connection[start], timestamp_ns[start], latency_us[start],
                                            quiet[start])
            code = command_code[start]
            command = codes.commands[code]
            if command is None:
                continue
            if self._rate_step:
                at_ns = <int64_t>min(<double>self._requests * self._rate_step, <double>NEVER_NS)
            else:
                at_ns = intended[start] if intended is not None else 0
            self._requests += 1
            key = keys[start]
            first_stream = first_streams[self._replay_connection(recorded_index[start],
                                                                 0 if key is None else key_hash[start])]
            if first_stream < 0:
                continue  # another worker's connection
            cas = CAS_NONE
            if command is _CAS:
                cas = CAS_STALE if codes.statuses[status_code[start]] == _EXISTS else CAS_CURRENT
            shape = self._shape(code, codes.protocols[protocol_code[start]], command,
                                value_length[start] if codes.carries_value[code] else 0, flags[start],
                                _ttl_left(ttl[start], timestamp_ns[start]), quiet[start] != 0, delta[start],
                                initial[start])
            self._plan_request(keys[start:end], first_stream, shape, codes.slots[code],
                               codes.effects[code], cas, at_ns, outstanding)
        return [(index, (<_Run>self._runs[index]).block()) for index in self._touched]

    cdef _ShapeMemo _shape(self, int64_t code, object protocol, object command, int64_t value_length, int64_t flags,
                           int64_t ttl, bint quiet, uint64_t delta, object initial):
        """The request's shape, kept as its command code's latest where it is one (counters' initial values are
        rare: their requests get a shape of their own)."""
        cdef _ShapeMemo memo
        if initial is not None:
            memo = _ShapeMemo()
            memo.remember(protocol, command, value_length, flags, ttl, quiet, delta, initial)
            return memo
        while len(self._shapes) <= code:
            self._shapes.append(_ShapeMemo())
        memo = self._shapes[code]
        if not memo.holds(protocol, command, value_length, flags, ttl, quiet, delta):
            memo.remember(protocol, command, value_length, flags, ttl, quiet, delta, None)
        return memo

    cdef void _plan_request(self, list keys, int64_t first_stream, _ShapeMemo shape, int64_t slot, int effect,
                            int64_t cas, int64_t at_ns, int64_t outstanding) except *:
        if self._server_count == 1 and keys[0] is not None and None not in keys:
            self._plan_on(first_stream, 0, keys, shape, slot, effect, cas, at_ns, outstanding)
            return
        for target, target_keys in self._per_target(keys):
            self._plan_on(first_stream + <int64_t>target, target, target_keys, shape, slot, effect, cas, at_ns,
                          outstanding)

    cdef void _plan_on(self, int64_t stream, Py_ssize_t target, list keys, _ShapeMemo shape, int64_t slot, int effect,
                       int64_t cas, int64_t at_ns, int64_t outstanding) except *:
        """Plans the request's part for one server (its `keys` there), on that server's stream."""
        cdef int64_t number = self._planned
        cdef Py_ssize_t dependencies = 0
        self._planned += 1
        if self._order is not None:
            self._order.note(stream, target, number, effect if keys or effect == EFFECT_FLUSH else EFFECT_NONE, keys)
            dependencies = self._order.settle(stream)
        self._group(self._run_of(stream), stream, shape, keys, slot, cas, at_ns, outstanding, number, dependencies)

    cdef _Run _run_of(self, int64_t stream):
        cdef _Run run = self._runs[stream]
        if run is None:
            run = self._runs[stream] = _Run()
        if not run.listed:
            run.listed = True
            self._touched.append(stream)
        return run

    cdef int _group(self, _Run run, int64_t stream, _ShapeMemo shape, list keys, int64_t slot, int64_t cas,
                    int64_t at_ns, int64_t outstanding, int64_t number, Py_ssize_t dependencies) except -1:
        """Adds the group of the request on `stream` (which speaks binary or not whatever the recording spoke) to
        the stream's run, encoded by template where its shape has one; opaques are numbered from its seq. Its
        `dependencies` are the first ones the key order settled."""
        cdef bint binary = self._binaries[stream]
        cdef int64_t seq = <int64_t>self._opaques[stream] + 1
        cdef int64_t expect, units
        cdef int64_t* row
        cdef Py_ssize_t pair
        cdef bytes key, head, tail
        protocol = shape.protocol
        if binary != (protocol is _BINARY):
            protocol = _BINARY if binary else _TEXT
        template = None
        if len(keys) == 1:
            key = keys[0]
            template = self._template(protocol, shape, len(key))
        if template is not None:
            head, tail, expect, units = template
            run.write(head)
            run.write(key)
            run.write(tail)
        else:
            payload, expect, units, used = self._encoder.encode(protocol, shape.request, keys, seq)
            self._opaques[stream] += used
            run.write(payload)
        for pair in range(dependencies):
            run.depend(self._order._after[pair].stream, self._order._after[pair].number)
        if cas != CAS_NONE:
            run.remember_key(keys[0])
        row = run.add_row()
        row[B_SLOT] = slot
        row[B_ROWS] = len(keys) or 1
        row[B_EXPECT] = expect
        row[B_UNITS] = units
        row[B_AT_NS] = at_ns
        row[B_OUTSTANDING] = outstanding
        row[B_SEQ] = seq
        row[B_NUMBER] = number
        row[B_CAS] = cas
        row[B_PAYLOAD_END] = run.payload_size
        row[B_AFTER_END] = run.after_count
        return 0

    cdef object _template(self, object protocol, _ShapeMemo shape, Py_ssize_t key_length):
        """encoder.template, remembered here under a key hashed from plain tuples (the stream's protocol joins the
        key only where it is not the recorded one), and on the shape for its next request of the same key length."""
        if shape.template_protocol is protocol and shape.template_key_length == key_length:
            return shape.template
        cdef tuple cached = (protocol, shape.fields, key_length) if protocol is not shape.protocol else (
            shape.fields, key_length)
        template = self._templates.get(cached, _UNSEEN)
        if template is _UNSEEN:
            template = self._encoder.template(protocol, shape.request, key_length)
            if len(self._templates) >= TEMPLATES:
                self._templates.clear()
            self._templates[cached] = template
        shape.template_protocol = protocol
        shape.template_key_length = key_length
        shape.template = template
        return template

    cdef int64_t _outstanding(self, int64_t recorded, int64_t timestamp_ns, int64_t latency_us,
                              uint8_t quiet) except -1:
        cdef list due
        if not self._track_depth:
            return 0
        due = self._replies_due.get(recorded)
        if due is None:
            due = self._replies_due[recorded] = []
        while due and <int64_t>due[0] <= timestamp_ns:
            heapq.heappop(due)
        outstanding = len(due)
        if latency_us >= 0 and not quiet:
            heapq.heappush(due, timestamp_ns + latency_us * NS_PER_US)
        return outstanding

    cdef object _recorded_indexes(self, object connections):
        """Each row's recorded connection as its place among the recorded connections."""
        if len(connections) and not len(self._recorded):
            raise KeyError(int(connections[0]))
        places = np.searchsorted(self._recorded, connections)
        found = np.minimum(places, len(self._recorded) - 1)
        unknown = np.flatnonzero((places >= len(self._recorded)) | (self._recorded[found] != connections))
        if len(unknown):
            raise KeyError(int(connections[unknown[0]]))  # as the specification's dict
        return np.ascontiguousarray(places, dtype=np.int64)

    cdef int64_t _replay_connection(self, int64_t index, uint64_t key_hash) except -1:
        cdef int64_t owned
        if self._replay_count <= self._recorded_count:
            return index % self._replay_count
        owned = (self._replay_count - index + self._recorded_count - 1) // self._recorded_count
        return index + self._recorded_count * <int64_t>(key_hash % <uint64_t>owned)

    cdef list _per_target(self, list keys):
        cdef list present
        cdef dict by_target
        if keys[0] is None:
            return [(target, []) for target in range(self._server_count)]
        present = keys if None not in keys else [key for key in keys if key is not None]
        if self._server_count == 1:
            return [(0, present)]
        by_target = {}
        for key in present:
            by_target.setdefault(self._continuum.server_of(key), []).append(key)
        return list(by_target.items())


cdef class _Slice:
    """What a slice's command and protocol codes stand for, looked up once per slice instead of once per row."""

    cdef list commands
    cdef list protocols
    cdef list statuses
    cdef list slots
    cdef list effects
    cdef list carries_value

    def __cinit__(self, names, dict slots):
        self.commands = list(names.commands)
        self.protocols = list(names.protocols)
        self.statuses = list(names.statuses)
        self.slots = [None if command is None else slots[command] for command in self.commands]
        self.effects = [EFFECT_NONE if command is None else _effect_of(command, True) for command in self.commands]
        self.carries_value = [command in VALUE_COMMANDS for command in self.commands]


cdef object _sorted_places(dict recorded_index):
    """The recorded connections in the order of their places (index -> connection), which is theirs sorted."""
    ordered = np.empty(len(recorded_index), dtype=np.int64)
    for recorded, index in recorded_index.items():
        ordered[index] = recorded
    if len(ordered) > 1 and not (ordered[1:] > ordered[:-1]).all():
        raise ValueError("recorded connections must be indexed in sorted order")
    return ordered


cdef int64_t _ttl_left(int64_t ttl, int64_t timestamp_ns) noexcept:
    """pass_plan.ttl_left: an absolute expiry time as the seconds left at the request's time."""
    cdef int64_t second, remaining
    if ttl <= ABSOLUTE_TTL_S:
        return ttl
    second = timestamp_ns // NS_PER_S  # Python's floor division (cdivision is on: corrected below)
    if timestamp_ns % NS_PER_S != 0 and timestamp_ns < 0:
        second -= 1
    remaining = ttl - second
    return remaining if remaining > 0 else -1


@cython.final
cdef class _ShapeMemo:
    """The shape of a command code's latest request (protocol and RequestShape fields), and the template it last
    took: most requests repeat their command's latest shape, and then build and hash no tuple."""

    cdef object protocol
    cdef object command
    cdef int64_t value_length
    cdef int64_t flags
    cdef int64_t ttl
    cdef bint quiet
    cdef uint64_t delta
    cdef tuple fields  # (protocol, *request fields): what the template cache is keyed by
    cdef object request  # the RequestShape
    cdef object template_protocol  # the stream protocol the template below is for; None: none yet
    cdef Py_ssize_t template_key_length
    cdef object template

    cdef bint holds(self, object protocol, object command, int64_t value_length, int64_t flags, int64_t ttl,
                    bint quiet, uint64_t delta) noexcept:
        return (self.fields is not None and self.protocol is protocol and self.command is command
                and self.value_length == value_length and self.flags == flags and self.ttl == ttl
                and self.quiet == quiet and self.delta == delta)

    cdef void remember(self, object protocol, object command, int64_t value_length, int64_t flags, int64_t ttl,
                       bint quiet, uint64_t delta, object initial) except *:
        self.protocol = protocol
        self.command = command
        self.value_length = value_length
        self.flags = flags
        self.ttl = ttl
        self.quiet = quiet
        self.delta = delta
        self.fields = (protocol, command, value_length, flags, ttl, quiet, delta, initial)
        self.request = RequestShape(command=command, value_length=value_length, flags=flags, ttl=ttl, quiet=quiet,
                                    delta=delta, initial=initial)
        self.template_protocol = None
        self.template = None
