"""The recorded happens-before order between connections, kept by an as-fast-as-possible replay.

A client with a pool of connections sets a key on one connection and gets it on another; the server saw the set
first, so the get hit. Replayed with every connection running freely, the get may overtake the set and miss, and
the replay no longer moves the server's counters as the recording did. This module decides, request by request
in profile order (the order the recorder saw the replies, which is the order the server handled them), which
earlier requests on other streams must have been answered before a request may be sent:
- a read (get family, touch) waits for the last write of each of its keys;
- a write waits for the last write and for every read since it, so a get recorded before a delete still hits;
- `flush_all` waits for everything sent before it to its server, and everything sent after waits for it.
Reads do not wait for reads, so a hot key read from many connections is not serialised.

Requests on the same stream need nothing: a connection's requests are handled in order. A stream completes its
requests in order too, so "answered up to request N" is one number per stream, and a dependency is a pair
(stream, request number). Sans-IO: the replay engine asks, the planner feeds it; nothing here does I/O.

A key is known by its 64-bit hash: a profile may hold tens of millions of keys, and keeping each one alive here
would double the replay's memory. Two keys whose hashes collide are ordered as one key, which can only make a
request wait for one it need not have waited for, never let one overtake.
"""

from __future__ import annotations

from collections.abc import Sequence

from membench.protocol.events import RETRIEVAL_COMMANDS, Command

Dependency = tuple[int, int]  # (stream index, request number on that stream's worker)
NO_DEPENDENCIES: tuple[Dependency, ...] = ()

_READS = frozenset(RETRIEVAL_COMMANDS | {Command.TOUCH})
_KEYLESS_WITH_GLOBAL_EFFECT = frozenset({Command.FLUSH_ALL})


class _Server:
    """What one server has been sent so far in this pass: the latest requests on each key and stream."""

    def __init__(self) -> None:
        self.writer: dict[int, Dependency] = {}  # key's hash -> its latest write
        self.readers: dict[int, dict[int, int]] = {}  # key's hash -> stream -> its latest read of the key
        self.last: dict[int, int] = {}  # stream -> its latest request
        self.barrier: Dependency | None = None  # the latest flush_all
        self.past_barrier: set[int] = set()  # streams that have waited for it (their order covers the rest)


class KeyOrder:
    """Tracks, for one replay pass, the last requests that touched each key of each server."""

    def __init__(self) -> None:
        self._servers: dict[int, _Server] = {}

    def dependencies(self, stream: int, server: int, number: int, command: Command,
                     keys: Sequence[bytes]) -> tuple[Dependency, ...]:
        """What request `number` on `stream` must wait for, in stream order; records it as the latest on its keys
        and server."""
        state = self._servers.get(server)
        if state is None:
            state = self._servers[server] = _Server()
        after: dict[int, int] = {}
        if state.barrier is not None and stream not in state.past_barrier:
            after[state.barrier[0]] = state.barrier[1]
            state.past_barrier.add(stream)
        if command in _KEYLESS_WITH_GLOBAL_EFFECT:
            after.update(state.last)
            state.writer.clear()
            state.readers.clear()
            state.barrier = (stream, number)
            state.past_barrier = {stream}
        elif command in _READS:
            for key in map(hash, keys):
                _after(state.writer.get(key), after)
                state.readers.setdefault(key, {})[stream] = number
        elif keys:
            for key in map(hash, keys):
                _after(state.writer.get(key), after)
                for reader in (state.readers.pop(key, None) or {}).items():
                    _after(reader, after)
                state.writer[key] = (stream, number)
        state.last[stream] = number
        after.pop(stream, None)
        return tuple(sorted(after.items())) if after else NO_DEPENDENCIES


def _after(request: Dependency | None, after: dict[int, int]) -> None:
    """Adds a dependency on `request`; per stream only the latest counts, since a stream answers in order."""
    if request is not None and request[1] > after.get(request[0], -1):
        after[request[0]] = request[1]
