"""A recording TCP relay in front of a real memcached: what the replay sent, per connection, seen from outside."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class RecordingRelay:
    """Accepts on a free port, forwards both ways, and keeps every client->server byte of each connection."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.sent: list[bytearray] = []  # per accepted connection, in accept order
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closing = False
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._upstream)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            record = bytearray()
            with self._lock:
                self.sent.append(record)
            for source, target, keep in ((client, server, record), (server, client, None)):
                thread = threading.Thread(target=self._pipe, args=(source, target, keep), daemon=True)
                thread.start()
                self._threads.append(thread)

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket, keep: bytearray | None) -> None:
        try:
            while data := source.recv(65536):
                if keep is not None:
                    keep += data
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> RecordingRelay:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._closing = True
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)
