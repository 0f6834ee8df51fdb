# replay/order.py's KeyOrder, rule for rule, included by _pass_plan.pyx: a key's latest write and its readers since
# in one entry, and the common one-key read answered without a dict of dependencies.

cdef enum KeyEffect:
    EFFECT_NONE = 0  # a keyless request without global effect: orders nothing
    EFFECT_READ = 1
    EFFECT_WRITE = 2
    EFFECT_FLUSH = 3

cdef object _READS = frozenset(RETRIEVAL_COMMANDS | {Command.TOUCH})


cdef int _effect_of(object command, bint keyed):
    if command is Command.FLUSH_ALL:
        return EFFECT_FLUSH
    if command in _READS:
        return EFFECT_READ
    return EFFECT_WRITE if keyed else EFFECT_NONE


cdef inline dict _after(object stream, object number, dict after):
    """Adds a dependency on request `number` of `stream`, making `after` on the first; per stream only the latest
    counts, since a stream answers in order."""
    if after is None:
        return {stream: number}
    if number > after.get(stream, -1):
        after[stream] = number
    return after


@cython.no_gc  # holds ints and a dict of ints only: it can be in no reference cycle
@cython.final
cdef class _KeyState:
    """What one server has been sent on one key: its latest write, and every stream's latest read since."""

    cdef object writer_stream  # None before the first write
    cdef object writer_number
    cdef dict readers  # stream -> number, or None


@cython.final
cdef class _Server:
    """order.py's _Server, with a key's writer and readers in one entry: one lookup per key instead of three."""

    cdef dict keys  # key -> _KeyState
    cdef dict last  # stream -> its latest request
    cdef object barrier  # the latest flush_all, or None
    cdef set past_barrier

    def __cinit__(self):
        self.keys = {}
        self.last = {}
        self.barrier = None
        self.past_barrier = set()

    cdef _KeyState key(self, object key):
        cdef _KeyState state = self.keys.get(key)
        if state is None:
            state = _KeyState.__new__(_KeyState)
            self.keys[key] = state
        return state


@cython.final
cdef class KeyOrder:
    """See order.py's KeyOrder."""

    cdef dict _servers

    def __cinit__(self):
        self._servers = {}

    def dependencies(self, stream, server, number, command, keys):
        return self.depend(stream, server, number, _effect_of(command, len(keys) > 0), keys)

    cdef tuple _read_one(self, _Server state, object stream, object number, object key):
        """The common case, without the general case's dict of dependencies: a one-key read waits for the key's
        latest write, if another stream made it."""
        cdef _KeyState key_state = state.key(key)
        if key_state.readers is None:
            key_state.readers = {}
        key_state.readers[stream] = number
        state.last[stream] = number
        if key_state.writer_stream is None or key_state.writer_stream == stream:
            return _NO_DEPENDENCIES
        return _untracked(((key_state.writer_stream, key_state.writer_number),))

    cdef tuple depend(self, object stream, object server, object number, int effect, list keys):
        cdef _Server state = self._servers.get(server)
        cdef _KeyState key_state
        cdef dict after = None
        if state is None:
            state = _Server()
            self._servers[server] = state
        if state.barrier is not None and stream not in state.past_barrier:
            after = {(<tuple>state.barrier)[0]: (<tuple>state.barrier)[1]}
            state.past_barrier.add(stream)
        elif effect == EFFECT_READ and len(keys) == 1:
            return self._read_one(state, stream, number, keys[0])
        if effect == EFFECT_FLUSH:
            if after is None:
                after = {}
            after.update(state.last)
            state.keys.clear()
            state.barrier = (stream, number)
            state.past_barrier = {stream}
        elif effect == EFFECT_READ:
            for key in keys:
                key_state = state.key(key)
                if key_state.writer_stream is not None:
                    after = _after(key_state.writer_stream, key_state.writer_number, after)
                if key_state.readers is None:
                    key_state.readers = {}
                key_state.readers[stream] = number
        elif effect == EFFECT_WRITE:
            for key in keys:
                key_state = state.key(key)
                if key_state.writer_stream is not None:
                    after = _after(key_state.writer_stream, key_state.writer_number, after)
                if key_state.readers:
                    for reader, read in key_state.readers.items():
                        after = _after(reader, read, after)
                key_state.readers = None
                key_state.writer_stream = stream
                key_state.writer_number = number
        state.last[stream] = number
        if not after:
            return _NO_DEPENDENCIES
        after.pop(stream, None)
        return _untracked(tuple(after.items())) if after else _NO_DEPENDENCIES
