"""HTTP plumbing shared by the fake provider servers (OpenAI, Anthropic, Bedrock).

:class:`FakeServer` is a ``ThreadingHTTPServer`` bound to ``127.0.0.1`` on an
ephemeral port that knows the fake it serves and tracks its open connections,
so the fake's ``close()`` can shut them down.  :class:`FakeHandler` is the
request-handler base: HTTP/1.1 keep-alive with ``TCP_NODELAY``, quiet logs, a
vanished client treated as the end of the connection, request bodies read by
``Content-Length`` or chunked, and every request recorded with the fake.  Each
fake subclasses the handler with its own endpoints, ``server_version`` (the
``Server`` header), record type (:meth:`FakeHandler._recorded`) and framing
error (:meth:`FakeHandler._send_framing_error`).  :class:`FakeService` is the
base of the fakes themselves: the behaviour queue, the request record, ids
and the server's thread and shutdown.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

__all__ = ["FakeHandler", "FakeServer", "FakeService", "RecordingFake"]

_RequestT_contra = TypeVar("_RequestT_contra", contravariant=True)


class RecordingFake(Protocol[_RequestT_contra]):
    """A fake that keeps a record of the requests its server receives."""

    def _record(self, request: _RequestT_contra) -> None:
        """Append one recorded request."""


FakeT = TypeVar("FakeT", bound=RecordingFake[Any])
BehaviourT = TypeVar("BehaviourT")
RequestT = TypeVar("RequestT")


class FakeServer(ThreadingHTTPServer, Generic[FakeT]):
    """ThreadingHTTPServer on 127.0.0.1 (ephemeral port) that knows its fake and tracks open connections."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, fake: FakeT, handler: type[FakeHandler]) -> None:
        """Bind 127.0.0.1 on an ephemeral port; ``handler`` serves each connection."""
        self.fake: FakeT = fake
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), handler)

    def drop_connections(self) -> None:
        """Shut down every open connection, so handlers blocked on one return."""
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FakeHandler(BaseHTTPRequestHandler):
    """Request-handler base: keep-alive connection lifecycle, body reading and request recording."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeHTTP/1.0"
    server: FakeServer[Any]

    def version_string(self) -> str:
        """Value of the Server header."""
        return self.server_version

    # ---- connection lifecycle -------------------------------------------------

    def setup(self) -> None:
        """Register the connection so close() can shut it down."""
        super().setup()
        # Headers, body and stream chunks go out in separate writes; without TCP_NODELAY, Nagle plus
        # the client's delayed ACK would add ~40 ms to every keep-alive response and stream chunk.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        """Unregister the connection."""
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def handle_one_request(self) -> None:
        """Serve one request, treating a vanished client as end of connection."""
        try:
            super().handle_one_request()
        except (TimeoutError, ConnectionError, OSError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    # ---- request plumbing -----------------------------------------------------

    def _read_body(self) -> bytes:
        """Read the whole request body (Content-Length or chunked); ValueError on broken framing."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = bytearray()
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_body_or_400(self) -> bytes | None:
        """Read the body; on a broken framing record the request, answer 400, close the connection and return None."""
        try:
            return self._read_body()
        except ValueError:
            self.close_connection = True
            self._record(b"")
            self._send_framing_error()
            return None

    def _record(self, raw: bytes) -> dict[str, Any] | None:
        """Parse and record the request; return the body if it is a JSON object."""
        body: dict[str, Any] | None = None
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                body = parsed
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.fake._record(self._recorded(headers, body, raw))
        return body

    def _recorded(self, headers: dict[str, str], body: dict[str, Any] | None, raw: bytes) -> object:
        """This request as the fake's record type (lower-cased headers, JSON-object body or None, raw bytes)."""
        raise NotImplementedError

    def _send_framing_error(self) -> None:
        """Answer a request whose body framing is broken with the fake's 400."""
        raise NotImplementedError

    def _wants_close(self) -> bool:
        """True when the client asked for ``Connection: close``."""
        return self.headers.get("Connection", "").lower() == "close"


class FakeService(Generic[BehaviourT, RequestT]):
    """A fake provider: scripted behaviours, recorded requests and a FakeServer serving in a daemon thread."""

    def __init__(self, handler: type[FakeHandler], default: BehaviourT) -> None:
        """Bind 127.0.0.1 on an ephemeral port and serve with ``handler``; ``default`` answers when the queue is empty."""
        self._behaviour_type: type[BehaviourT] = type(default)
        self._initial_default: BehaviourT = default
        self._lock = threading.Lock()
        self._queue: deque[BehaviourT] = deque()
        self._default: BehaviourT = default
        self._requests: list[RequestT] = []
        self._ids = itertools.count(1)
        self._closing = threading.Event()
        self._closed = False
        self._server: FakeServer[FakeService[BehaviourT, RequestT]] = FakeServer(self, handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name=type(self).__name__, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return int(self._server.server_address[1])

    # ---- scripting -----------------------------------------------------------

    def enqueue(self, *behaviours: BehaviourT) -> None:
        """Append one-shot behaviours, consumed one per request answered by a behaviour, in FIFO order."""
        for behaviour in behaviours:
            self._check_behaviour(behaviour)
        with self._lock:
            self._queue.extend(behaviours)

    def set_default(self, behaviour: BehaviourT) -> None:
        """Set the behaviour used when the queue is empty."""
        self._check_behaviour(behaviour)
        with self._lock:
            self._default = behaviour

    @property
    def queued(self) -> int:
        """Number of one-shot behaviours not yet consumed."""
        with self._lock:
            return len(self._queue)

    def _check_behaviour(self, behaviour: object) -> None:
        """Raise TypeError unless ``behaviour`` is of this fake's behaviour type."""
        if not isinstance(behaviour, self._behaviour_type):
            raise TypeError(f"expected {self._behaviour_type.__name__}, got {type(behaviour).__name__}")

    def _take_behaviour(self) -> BehaviourT:
        """Pop the next queued behaviour or return the default."""
        with self._lock:
            return self._queue.popleft() if self._queue else self._default

    # ---- recording -----------------------------------------------------------

    @property
    def requests(self) -> list[RequestT]:
        """Snapshot (a new list) of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        """Forget recorded requests, drop queued behaviours and restore the initial default behaviour."""
        with self._lock:
            self._requests.clear()
            self._queue.clear()
            self._default = self._initial_default

    def _record(self, request: RequestT) -> None:
        """Append one recorded request."""
        with self._lock:
            self._requests.append(request)

    def _next_id(self, prefix: str) -> str:
        """A unique id with ``prefix``."""
        return f"{prefix}{next(self._ids):06d}"

    # ---- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        """Stop serving, wake slow handlers, drop open connections; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        self._server.shutdown()
        self._server.drop_connections()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        """Return self (the server is already running)."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the server."""
        self.close()
