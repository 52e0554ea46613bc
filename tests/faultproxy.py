"""A fault-injecting HTTP proxy on 127.0.0.1, put between boto3 and an S3 server (moto).

A test switches faults on and off while the code under test keeps using the
same endpoint URL, so "the fault clears" is real: the next request goes
through untouched. Faults:

* ``delay``: wait before forwarding (longer than the client's read timeout);
* ``status``: answer an S3 error document (503 SlowDown, 403 AccessDenied, ...);
* ``cut``: forward the answer's headers, full Content-Length included, then
  half of its body, then close the connection;
* ``checksum``: forward the answer with every ``x-amz-checksum-*`` header
  made wrong (the bytes no longer match the checksum S3 sent);
* ``down()`` / ``up()``: stop listening (connection refused), then listen
  again on the same port.

Each fault applies only to request paths containing ``match`` (default: all),
and with ``times`` only to that many requests, then everything is forwarded.
Every wait is bounded and wakes on ``clear()``/``close()``.
"""

from __future__ import annotations

import http.client
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
_CHECKSUMS = {f"x-amz-checksum-{name}" for name in ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")}
_REASONS = {403: "Forbidden", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass
class Fault:
    """What to do to matching requests."""

    kind: str = "none"  # none | delay | status | cut | checksum
    match: str = ""
    times: int = 0  # 0: every matching request
    delay_s: float = 0.0
    status: int = 503
    code: str = "SlowDown"
    message: str = "Please reduce your request rate."


class FaultProxy:
    """Forwards to ``upstream`` (host, port) unless a fault says otherwise."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.fault = Fault()
        self.faulted = 0  # requests a fault was applied to: tests check a fault really fired
        self.forwarded = 0
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.up()

    @property
    def url(self) -> str:
        """The endpoint URL to give boto3."""
        return f"http://127.0.0.1:{self.port}"

    def set(self, kind: str, match: str = "", **options: Any) -> None:
        """Switch a fault on (replacing any other)."""
        with self._lock:
            self._wake.clear()
            self.fault = Fault(kind=kind, match=match, **options)
            self.faulted = 0

    def clear(self) -> None:
        """No fault: everything is forwarded; any request waiting in a delay is released."""
        with self._lock:
            self.fault = Fault()
            self._wake.set()

    def up(self) -> None:
        """Listen (again, on the same port once it has one)."""
        if self._server is not None:
            return
        proxy = self

        class Handler(_Handler):
            owner = proxy

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def down(self) -> None:
        """Stop listening: connections to the port are refused."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def close(self) -> None:
        """Release waiting requests and stop."""
        self._wake.set()
        self.down()

    def _fault_for(self, path: str) -> Fault | None:
        fault = self.fault
        if fault.kind == "none" or fault.match not in path:
            return None
        with self._lock:
            if fault.times and self.faulted >= fault.times:
                return None
            self.faulted += 1
        return fault


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def _any(self) -> None:
        proxy = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fault = proxy._fault_for(self.path)
        if fault is not None and fault.kind == "delay":
            # wakes early when the test clears the fault or the proxy closes
            proxy._wake.wait(fault.delay_s)
        if fault is not None and fault.kind == "status":
            return self._error(fault)
        upstream = http.client.HTTPConnection(*proxy.upstream, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            resp = upstream.getresponse()
            data = resp.read()
        finally:
            upstream.close()
        with proxy._lock:
            proxy.forwarded += 1
        self.send_response_only(resp.status, resp.reason)
        for name, value in resp.getheaders():
            if name.lower() not in _HOP and name.lower() != "content-length":
                if fault is not None and fault.kind == "checksum" and name.lower() in _CHECKSUMS:
                    value = "AAAAAA==" if len(value) <= 8 else "A" * (len(value) - 1) + "="
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if fault is not None and fault.kind == "cut" and len(data) > 1:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            # a hard close mid-body, as a dropped connection looks to the client
            self.connection.shutdown(socket.SHUT_RDWR)
        elif self.command != "HEAD":
            self.wfile.write(data)
        self.close_connection = True

    def _error(self, fault: Fault) -> None:
        doc = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{fault.code}</Code><Message>{fault.message}</Message>"
            "<RequestId>FAULTPROXY</RequestId></Error>"
        ).encode()
        self.send_response_only(fault.status, _REASONS.get(fault.status, "Error"))
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(doc)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(doc)
        self.close_connection = True

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any
