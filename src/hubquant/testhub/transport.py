"""HTTP plumbing of the test Hub: bodies, responses, keep-alive and injected faults."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

from hubquant.testhub.errors import HubError
from hubquant.testhub.faults import FaultPlan

logger = logging.getLogger(__name__)

_COPY_BLOCK = 1024 * 1024


class BodyReader:
    """The request body, from a Content-Length or chunked stream.

    A second read returns nothing.
    """

    def __init__(self, stream, headers: Message) -> None:
        self._stream = stream
        self._chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self._remaining = int(headers.get("Content-Length") or 0)
        self._done = not self._chunked and self._remaining == 0

    def chunks(self) -> Iterator[bytes]:
        if self._done:
            return
        if self._chunked:
            yield from self._chunked_blocks()
        else:
            while self._remaining > 0:
                block = self._stream.read(min(_COPY_BLOCK, self._remaining))
                if not block:
                    raise ConnectionError(
                        "Client closed the connection in the middle of the body."
                    )
                self._remaining -= len(block)
                yield block
        self._done = True

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def json(self) -> object:
        raw = self.read()
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise HubError(
                400, f"Invalid JSON in the request body: {error}."
            ) from error

    def form(self) -> dict[str, list[str]]:
        return parse_qs(
            self.read().decode("utf-8", errors="replace"), keep_blank_values=True
        )

    def lines(self) -> Iterator[bytes]:
        """Yield the body line by line without holding all of it."""
        pending = b""
        for block in self.chunks():
            pending += block
            *complete, pending = pending.split(b"\n")
            yield from complete
        if pending:
            yield pending

    def drain(self) -> None:
        for _ in self.chunks():
            pass

    def _chunked_blocks(self) -> Iterator[bytes]:
        while True:
            size_line = self._stream.readline(1024)
            if not size_line:
                raise ConnectionError(
                    "Client closed the connection in the middle of a chunk."
                )
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # Skip optional trailers up to the blank line.
                while self._stream.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return
            remaining = size
            while remaining > 0:
                block = self._stream.read(min(_COPY_BLOCK, remaining))
                if not block:
                    raise ConnectionError(
                        "Client closed the connection in the middle of a chunk."
                    )
                remaining -= len(block)
                yield block
            self._stream.readline(1024)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: BodyReader

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str) -> bool:
        return (self.param(name) or "").lower() in ("1", "true", "yes")


@dataclass
class Response:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # When set, the body is this byte range of a file, streamed.
    file: Path | None = None
    file_range: tuple[int, int] | None = None

    @classmethod
    def json(
        cls, data: object, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        body = json.dumps(data, default=str).encode()
        all_headers = {
            "Content-Type": "application/json; charset=utf-8",
            **(headers or {}),
        }
        return cls(status, all_headers, body)

    @classmethod
    def error(cls, error: HubError) -> Response:
        body = dict(error.body or {})
        body.setdefault("error", error.message)
        headers = {"X-Error-Message": _header_safe(error.message), **error.headers}
        if error.error_code:
            headers["X-Error-Code"] = error.error_code
        return cls.json(body, error.status, headers)


Handler = Callable[[Request], Response]


class HubHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that can close its keep-alive connections on stop."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], app_handler: Handler, faults: FaultPlan
    ) -> None:
        self.app_handler = app_handler
        self.faults = faults
        self.requests_log: list[tuple[str, str, int | None]] = []
        self._log_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, HubRequestHandler)

    def handle_error(self, request, client_address) -> None:
        # A client that hangs up mid-response is routine (timeouts, faults).
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            logger.debug("Connection from %s ended: %s", client_address, error)
        else:
            logger.exception("Test Hub failed on a request from %s", client_address)

    def record(self, method: str, path: str, status: int | None) -> None:
        with self._log_lock:
            self.requests_log.append((method, path, status))

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Close idle and busy connections, so no thread serves a stopped server."""
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubHTTPServer
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 120

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's
        # algorithm and the client's delayed ACK add about 40 ms per response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def do_GET(self) -> None:  # noqa: N802 (name fixed by BaseHTTPRequestHandler)
        self._serve()

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def do_PUT(self) -> None:  # noqa: N802
        self._serve()

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (signature fixed)
        logger.debug("%s %s", self.address_string(), format % args)

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        body = BodyReader(self.rfile, self.headers)
        request = Request(
            self.command,
            path,
            parse_qs(query, keep_blank_values=True),
            self.headers,
            body,
        )

        fault = self.server.faults.take(self.command, path)
        if fault is not None:
            body.drain()
            if fault.drop_connection:
                logger.info(
                    "Injected fault: dropping the connection of %s %s",
                    self.command,
                    path,
                )
                self.server.record(self.command, path, None)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            logger.info(
                "Injected fault: responding to %s %s with %s",
                self.command,
                path,
                fault.status,
            )
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            response = Response.error(
                HubError(
                    fault.status,
                    f"Injected fault: status {fault.status}.",
                    headers=headers,
                )
            )
        else:
            try:
                response = self.server.app_handler(request)
            except HubError as error:
                logger.info(
                    "%s %s failed with %d: %s",
                    self.command,
                    path,
                    error.status,
                    error.message,
                )
                response = Response.error(error)
            except ConnectionError:
                logger.info("Client left in the middle of %s %s", self.command, path)
                self.server.record(self.command, path, None)
                self.close_connection = True
                return
            except Exception:
                logger.exception("Test Hub failed on %s %s", self.command, path)
                response = Response.error(
                    HubError(500, "Internal error in the test Hub; see its log.")
                )
            try:
                body.drain()
            except ConnectionError:
                self.close_connection = True
                return

        self.server.record(self.command, path, response.status)
        self._send(response)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        if response.file is not None and response.file_range is not None:
            start, end = response.file_range
            length = end - start
        else:
            length = len(response.body)
        headers = {"Content-Length": str(length), **response.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        if response.file is not None and response.file_range is not None:
            start, end = response.file_range
            with response.file.open("rb") as file:
                file.seek(start)
                remaining = end - start
                while remaining > 0:
                    block = file.read(min(_COPY_BLOCK, remaining))
                    if not block:
                        break
                    self.wfile.write(block)
                    remaining -= len(block)
        else:
            self.wfile.write(response.body)


def _header_safe(text: str) -> str:
    """Squash a message into one latin-1 header line."""
    line = " ".join(text.split())
    return line.encode("latin-1", errors="replace").decode("latin-1")
