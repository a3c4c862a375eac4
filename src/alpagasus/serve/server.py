"""The HTTP server under `alpagasus serve`: a bounded pool of handler threads instead of a thread per connection.

A new connection costs no thread until it sends something: it waits in a selector (at most MAX_WAITING of
them; one silent for FIRST_BYTE_S seconds is closed). Once readable it goes to a pool of at most `max_threads`
handler threads (started as needed), which serves it for as long as it keeps its requests coming (keep-alive,
see app.py's idle timeout). So 300 idle connections hold no thread, and no number of clients can start more
than `max_threads`.
"""

from __future__ import annotations

import queue
import selectors
import socket
import sys
import threading
import time
from http.server import HTTPServer
from typing import Any

MAX_THREADS = 64
MAX_WAITING = 1024
FIRST_BYTE_S = 10.0


class BoundedServer(HTTPServer):
    server_address: tuple[str, int]  # bound from a host string (typeshed allows bytes too)
    request_queue_size = 128
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, max_threads: int = MAX_THREADS):
        super().__init__(address, handler)
        self.max_threads = max_threads
        self._lock = threading.Lock()
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._sel = selectors.DefaultSelector()
        self._waiting: dict[socket.socket, tuple[float, Any]] = {}
        self._active: set[socket.socket] = set()
        self._workers = self._idle = 0
        self._closed = threading.Event()
        threading.Thread(target=self._watch, daemon=True, name="serve-accept").start()

    @property
    def threads(self) -> int:
        """Handler threads started (they stay, idle, for the next connections)."""
        return self._workers

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            if len(self._waiting) >= MAX_WAITING or self._closed.is_set():
                self.shutdown_request(request)
                return
            self._waiting[request] = (time.monotonic(), client_address)
            self._sel.register(request, selectors.EVENT_READ)

    def _watch(self) -> None:
        """Hand connections that have sent a byte to the pool; close those silent for too long."""
        while not self._closed.is_set():
            try:
                events = self._sel.select(timeout=0.5)
            except OSError:  # closed under us at shutdown
                return
            now = time.monotonic()
            with self._lock:
                for key, _ in events:
                    sock = key.fileobj
                    _, addr = self._waiting.pop(sock)  # type: ignore[call-overload]
                    self._sel.unregister(sock)
                    self._dispatch(sock, addr)  # type: ignore[arg-type]
                for sock, (since, _) in list(self._waiting.items()):
                    if now - since > FIRST_BYTE_S:
                        del self._waiting[sock]
                        self._sel.unregister(sock)
                        self.shutdown_request(sock)

    def _dispatch(self, sock: socket.socket, addr: Any) -> None:
        self._work.put((sock, addr))
        if self._work.qsize() > self._idle and self._workers < self.max_threads:
            self._workers += 1
            threading.Thread(target=self._worker, daemon=True, name=f"serve-worker-{self._workers}").start()

    def _worker(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            item = self._work.get()
            with self._lock:
                self._idle -= 1
            if item is None:
                return
            sock, addr = item
            with self._lock:
                self._active.add(sock)
            try:
                self.finish_request(sock, addr)
            except Exception:
                self.handle_error(sock, addr)
            finally:
                with self._lock:
                    self._active.discard(sock)
                self.shutdown_request(sock)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # the client went away or stalled: nothing to report
        super().handle_error(request, client_address)

    def server_close(self) -> None:
        """Stop listening, close waiting connections, end the connections being served, stop the pool."""
        self._closed.set()
        super().server_close()
        with self._lock:
            for sock in list(self._waiting):
                self.shutdown_request(sock)
            self._waiting.clear()
            for sock in self._active:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            for _ in range(self._workers):
                self._work.put(None)
        self._sel.close()
