"""A recording TCP relay in front of a real memcached: the exact bytes each connection sent and received."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class RecordingRelay:
    """Accepts on a free port, forwards both ways, and keeps each direction's chunks per connection, in order."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        # Per accepted connection, in accept order: (client -> server chunks, server -> client chunks).
        self.connections: list[tuple[list[bytes], list[bytes]]] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def sent(self) -> list[bytes]:
        """What each connection's client sent, joined."""
        with self._lock:
            return [b"".join(requests) for requests, _ in self.connections]

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._upstream)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            record: tuple[list[bytes], list[bytes]] = ([], [])
            with self._lock:
                self.connections.append(record)
            for source, target, chunks in ((client, server, record[0]), (server, client, record[1])):
                thread = threading.Thread(target=self._pipe, args=(source, target, chunks), daemon=True)
                thread.start()
                self._threads.append(thread)

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket, chunks: list[bytes]) -> None:
        try:
            while data := source.recv(65536):
                chunks.append(data)
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop accepting and wait until every relayed connection has been closed by its client."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        self._listener.close()
        self._accepting.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> RecordingRelay:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
