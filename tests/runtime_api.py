"""A stand-in for the service side of the Lambda Runtime API, on 127.0.0.1.

Lambda's runtime interface client (awslambdaric, the python3.12 runtime's
bootstrap) polls ``GET /2018-06-01/runtime/invocation/next`` for an event, then
posts the handler's result to ``.../invocation/{id}/response`` or its error to
``.../invocation/{id}/error``; an import failure goes to
``/2018-06-01/runtime/init/error``. This server hands out the queued events
one by one (with the request id, deadline and function ARN headers Lambda
sends) and records what comes back. Built on the standard library's
http.server: the API is four routes.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/2018-06-01/runtime"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:admission"


@dataclass
class Outcome:
    """What the runtime posted back for one invocation (or for its init)."""

    request_id: str
    kind: str  # "response", "error" or "init_error"
    body: Any
    headers: dict[str, str]  # names in lower case
    t_done: float


@dataclass
class RuntimeAPI:
    """The server, its queue of events and the outcomes, in arrival order."""

    server: ThreadingHTTPServer
    events: "queue.Queue[tuple[str, Any]]" = field(default_factory=queue.Queue)
    outcomes: list[Outcome] = field(default_factory=list)
    done: threading.Condition = field(default_factory=threading.Condition)
    t_first_next: float | None = None
    closing: threading.Event = field(default_factory=threading.Event)

    @property
    def address(self) -> str:
        """host:port, the value of AWS_LAMBDA_RUNTIME_API."""
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def add(self, event: Any) -> str:
        """Queue one event; returns its request id."""
        request_id = str(uuid.uuid4())
        self.events.put((request_id, event))
        return request_id

    def wait(self, count: int, timeout: float) -> list[Outcome]:
        """Block until ``count`` outcomes arrived (or the timeout); returns them."""
        deadline = time.monotonic() + timeout
        with self.done:
            while len(self.outcomes) < count and time.monotonic() < deadline:
                self.done.wait(deadline - time.monotonic())
            return list(self.outcomes)

    def close(self) -> None:
        """Stop serving; a runtime still polling gets its connection closed."""
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


def start() -> RuntimeAPI:
    """Serve the Runtime API on 127.0.0.1, on a free port, in a daemon thread."""
    api: RuntimeAPI

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path != f"{PREFIX}/invocation/next":
                self._reply(404)
                return
            if api.t_first_next is None:
                api.t_first_next = time.time()
            while True:  # long poll, as Lambda's is; ends when the server shuts down
                try:
                    request_id, event = api.events.get(timeout=0.5)
                    break
                except queue.Empty:
                    if api.closing.is_set():
                        return
            body = json.dumps(event).encode()
            self._reply(200, body, {
                "Content-Type": "application/json",
                "Lambda-Runtime-Aws-Request-Id": request_id,
                "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 30_000),
                "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN,
                "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0",
            })

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            parts = self.path[len(PREFIX):].strip("/").split("/")
            if parts == ["init", "error"]:
                request_id, kind = "", "init_error"
            elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                request_id, kind = parts[1], parts[2]
            else:
                self._reply(404)
                return
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            with api.done:
                api.outcomes.append(Outcome(request_id, kind, body, {k.lower(): v for k, v in self.headers.items()}, time.time()))
                api.done.notify_all()
            self._reply(202, b'{"status":"OK"}', {"Content-Type": "application/json"})

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            # A runtime killed while it long-polls /next drops its connection: expected, not news.
            import sys

            if not isinstance(sys.exc_info()[1], (ConnectionError, BrokenPipeError)):
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), Handler)
    api = RuntimeAPI(server)
    threading.Thread(target=server.serve_forever, name="runtime-api", daemon=True).start()
    return api
