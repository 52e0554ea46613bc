"""``make serve``: the API and the page on one local port, no AWS needed.

Like chalice's local mode and ``sam local start-api``, every API request
becomes an API Gateway REST (payload 1.0) proxy event handed to the very
``handler.lambda_handler`` that runs in Lambda, so routes, status codes,
headers and errors are the deployed ones. Files under ``web/`` (the page and
its ``config.json``) are served by this server itself, as S3 would serve
them; everything else, unknown paths included, goes to the handler.

The server is a small asyncio HTTP/1.1 server (keep-alive, pipelining,
``Expect: 100-continue``, chunked bodies). The handler is called inline on
the event loop: R runs one call at a time anyway (rlambda.rsession's lock),
so a thread hop per request would only add latency. Many clients are served
concurrently; their requests are scored one after another. ``--workers N``
forks N such processes, each with its own R, sharing the listening socket.

    python -m rlambda.local [--host 127.0.0.1] [--port 8080] [--web DIR] [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import errno
import json
import logging
import os
import signal
import socket
import sys
import time
import traceback
import uuid
from email.utils import formatdate
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, unquote

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEB = ROOT / "web"
STAGE = "local"
MAX_HEAD_BYTES = 64 * 1024
# API Gateway's payload limit; the handler applies its own, lower one.
MAX_BODY_BYTES = 10 * 1024 * 1024
IDLE_TIMEOUT_S = 60.0
LAMBDA_TIMEOUT_S = 30.0

Handler = Callable[[dict[str, Any], Any], Any]

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
_REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
    413: "Payload Too Large", 415: "Unsupported Media Type", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}


class LambdaContext:
    """The attributes of the Lambda Python runtime's context object."""

    __slots__ = ("aws_request_id", "_deadline")
    function_name = "rlambda-local"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:local:000000000000:function:rlambda-local"
    memory_limit_in_mb = 1024
    log_group_name = "/aws/lambda/rlambda-local"
    log_stream_name = "local"

    def __init__(self, request_id: str) -> None:
        self.aws_request_id = request_id
        self._deadline = time.monotonic() + LAMBDA_TIMEOUT_S

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the (notional) Lambda timeout."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def build_event(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The API Gateway REST proxy event (payload 1.0) for one HTTP request.

    ``target`` is the request line's path and query. Header names keep the
    client's spelling, as API Gateway does; ``headers`` holds the last value
    of a repeated header, ``multiValueHeaders`` all of them. A body that is
    not UTF-8 is sent base64-encoded with ``isBase64Encoded``.
    """
    raw_path, _, raw_query = target.partition("?")
    path = unquote(raw_path) or "/"
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in headers:
        single[name] = value
        multi.setdefault(name, []).append(value)
    query: dict[str, str] | None = None
    multi_query: dict[str, list[str]] | None = None
    if raw_query:
        pairs = parse_qsl(raw_query, keep_blank_values=True)
        if pairs:
            query, multi_query = {}, {}
            for key, value in pairs:
                query[key] = value
                multi_query.setdefault(key, []).append(value)
    text: str | None = None
    encoded = False
    if body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode("ascii"), True
    now = time.time()
    request_id = request_id or str(uuid.uuid4())
    proxy = path.lstrip("/")
    host = next((v for k, v in headers if k.lower() == "host"), "localhost")
    return {
        "resource": "/{proxy+}" if proxy else "/",
        "path": path,
        "httpMethod": method,
        "headers": single,
        "multiValueHeaders": multi,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": {"proxy": proxy} if proxy else None,
        "stageVariables": None,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": host.split(".")[0],
            "extendedRequestId": request_id,
            "httpMethod": method,
            "identity": {
                "sourceIp": source_ip,
                "userAgent": single.get("User-Agent") or single.get("user-agent"),
                "apiKey": single.get("x-api-key") or single.get("X-Api-Key") or single.get("X-API-Key"),
            },
            "path": f"/{STAGE}{path}",
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000),
            "resourceId": "local",
            "resourcePath": "/{proxy+}" if proxy else "/",
            "stage": STAGE,
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


_GATEWAY_ERROR = (502, [("Content-Type", "application/json")], b'{"message": "Internal server error"}')


def render_result(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body bytes from a proxy-integration answer.

    An answer API Gateway would reject (no statusCode, a body that is not a
    string) is a 502 with API Gateway's own message, as deployed.
    """
    if not isinstance(result, dict):
        return _GATEWAY_ERROR
    status = result.get("statusCode")
    body = result.get("body")
    if type(status) is not int or not 100 <= status <= 599 or not isinstance(body, (str, type(None))):
        return _GATEWAY_ERROR
    headers: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, values in (result.get("multiValueHeaders") or {}).items():
        seen.add(name.lower())
        headers.extend((str(name), str(v)) for v in values)
    for name, value in (result.get("headers") or {}).items():
        if name.lower() not in seen:
            headers.append((str(name), str(value)))
    if body is None:
        data = b""
    elif result.get("isBase64Encoded"):
        try:
            data = base64.b64decode(body)
        except ValueError:
            return _GATEWAY_ERROR
    else:
        data = body.encode("utf-8")
    return status, headers, data


class StaticFiles:
    """The page's files, served from one directory (as an S3 website would)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def find(self, path: str) -> Path | None:
        """The file a URL path names, or None (then the handler answers)."""
        rel = unquote(path).lstrip("/") or "index.html"
        if "\x00" in rel:
            return None
        candidate = (self.root / rel).resolve()
        # resolve() collapses "..": anything outside the root is not ours.
        if candidate != self.root and self.root not in candidate.parents:
            return None
        if candidate.is_dir():
            candidate = candidate / "index.html"
        return candidate if candidate.is_file() else None

    @staticmethod
    def content_type(file: Path) -> str:
        """The Content-Type for a file, by extension."""
        return _CONTENT_TYPES.get(file.suffix.lower(), "application/octet-stream")


class _Date:
    """The Date header value, formatted at most once a second."""

    second = -1
    value = ""

    @classmethod
    def now(cls) -> str:
        now = int(time.time())
        if now != cls.second:
            cls.second, cls.value = now, formatdate(now, usegmt=True)
        return cls.value


class _BadHttp(Exception):
    """A request this server cannot read; answered with ``status`` and closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _chunked(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked body at ``buf[start:]``: (body, end offset), or None if incomplete."""
    out = bytearray()
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if len(buf) - pos > 1024:
                raise _BadHttp(400, "bad chunk size line")
            return None
        size_text = bytes(buf[pos:eol]).split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _BadHttp(400, "bad chunk size") from None
        if size < 0:
            raise _BadHttp(400, "bad chunk size")
        pos = eol + 2
        if size == 0:
            # Trailers (ignored) end with an empty line.
            end = buf.find(b"\r\n\r\n", pos - 2)
            if end < 0:
                return None
            return bytes(out), end + 4
        if len(out) + size > MAX_BODY_BYTES:
            raise _BadHttp(413, "body too large")
        if len(buf) < pos + size + 2:
            return None
        out += buf[pos : pos + size]
        pos += size + 2


class _Head:
    """A parsed request line and headers."""

    __slots__ = ("method", "target", "version", "headers", "keep_alive", "length", "chunked", "expect", "end")

    def __init__(self, buf: bytearray, end: int) -> None:
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
            raise _BadHttp(400, "bad request line")
        self.method, self.target, self.version = parts[0].upper(), parts[1], parts[2]
        if not self.target.startswith("/"):
            raise _BadHttp(400, "bad request target")
        headers: list[tuple[str, str]] = []
        length = chunked = None
        connection = expect = ""
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            name = name.strip()
            if not sep or not name or name != name.rstrip() or " " in name:
                raise _BadHttp(400, "bad header line")
            value = value.strip()
            headers.append((name, value))
            lower = name.lower()
            if lower == "content-length":
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise _BadHttp(400, "bad Content-Length")
                length = int(value)
            elif lower == "transfer-encoding":
                if value.lower() != "chunked":
                    raise _BadHttp(501, "only chunked transfer encoding is supported")
                chunked = True
            elif lower == "connection":
                connection = value.lower()
            elif lower == "expect":
                expect = value.lower()
        if chunked and length is not None:
            raise _BadHttp(400, "both Content-Length and Transfer-Encoding")
        if length is not None and length > MAX_BODY_BYTES:
            raise _BadHttp(413, "body too large")
        self.headers = headers
        self.length = length or 0
        self.chunked = bool(chunked)
        self.expect = expect == "100-continue"
        if self.version == "HTTP/1.0":
            self.keep_alive = "keep-alive" in connection
        else:
            self.keep_alive = "close" not in connection
        self.end = end + 4


class Server:
    """Shared state of one serving process: handler, static files, connections, log."""

    def __init__(self, handler: Handler, static: StaticFiles, access_log: bool = True) -> None:
        self.handler = handler
        self.static = static
        self.access_log = access_log
        self.connections: set[_Connection] = set()

    def answer(self, head: _Head, body: bytes, peer: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers and body for one request: a page file or the handler's answer."""
        method = head.method
        if method in ("GET", "HEAD"):
            file = self.static.find(head.target.partition("?")[0])
            if file is not None:
                try:
                    data = file.read_bytes()
                except OSError:
                    data = None
                if data is not None:
                    return 200, [
                        ("Content-Type", self.static.content_type(file)),
                        ("Cache-Control", "no-cache"),
                        ("X-Content-Type-Options", "nosniff"),
                    ], data
        request_id = str(uuid.uuid4())
        event = build_event(method, head.target, head.headers, body, peer, request_id)
        try:
            result = self.handler(event, LambdaContext(request_id))
        except Exception as exc:  # what API Gateway answers when the function fails
            print(f"rlambda.local: handler raised {type(exc).__name__}: {exc}", file=sys.stderr)
            return _GATEWAY_ERROR
        status, headers, data = render_result(result)
        headers.append(("x-amzn-RequestId", request_id))
        return status, headers, data

    def log(self, peer: str, method: str, target: str, status: int, started: float) -> None:
        """One access line: client, request, status, latency."""
        if self.access_log:
            if len(target) > 200 or not target.isprintable():
                target = repr(target[:200])
            ms = (time.perf_counter() - started) * 1e3
            sys.stderr.write(f'{peer} "{method} {target}" {status} {ms:.2f}ms\n')


class _Connection(asyncio.Protocol):
    """One client connection: reads requests, answers them in order."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.buf = bytearray()
        self.head: _Head | None = None
        self.transport: asyncio.Transport | None = None
        self.peer = "-"
        self.last_active = time.monotonic()
        self.continued = False
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else "-"
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Small responses must leave at once, not wait for the client's ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None

    # Backpressure: a client that does not read its answers stops being read.
    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        self.buf += data
        try:
            while self.transport is not None and not self.closing and self._one():
                pass
        except _BadHttp as exc:
            self._fail(exc.status, str(exc))

    def _one(self) -> bool:
        """Answer the next complete request in the buffer; False if there is none yet."""
        buf = self.buf
        head = self.head
        if head is None:
            end = buf.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise _BadHttp(431, "request head too large")
                # Tolerate the stray CRLFs some clients send between requests.
                if buf.startswith(b"\r\n"):
                    del buf[:2]
                return False
            if end == 0:
                del buf[:4]
                return True
            head = self.head = _Head(buf, end)
            self.continued = False
        if head.chunked:
            decoded = _chunked(buf, head.end)
            if decoded is None:
                self._continue(head)
                return False
            body, used = decoded
        else:
            used = head.end + head.length
            if len(buf) < used:
                self._continue(head)
                return False
            body = bytes(buf[head.end : used])
        del buf[:used]
        self.head = None
        started = time.perf_counter()
        status, headers, data = self.server.answer(head, body, self.peer)
        # Logged before the answer leaves, so a client that has its answer
        # can rely on the line being written (the tests do).
        self.server.log(self.peer, head.method, head.target, status, started)
        self._write(head, status, headers, data)
        if not head.keep_alive:
            self._close()
            return False
        return True

    def _continue(self, head: _Head) -> None:
        if head.expect and not self.continued and self.transport is not None:
            self.continued = True
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _write(self, head: _Head, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}", f"Date: {_Date.now()}"]
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding", "date"):
                lines.append(f"{name}: {value}")
        no_body = status in (204, 304) or 100 <= status < 200
        if not no_body:
            lines.append(f"Content-Length: {len(data)}")
        if not head.keep_alive:
            lines.append("Connection: close")
        elif head.version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        if not no_body and head.method != "HEAD":
            out += data
        assert self.transport is not None
        self.transport.write(out)

    def _fail(self, status: int, message: str) -> None:
        """Answer a request that cannot be read, then close (the stream is unusable)."""
        body = json.dumps({"message": message}).encode()
        if self.transport is not None:
            self.transport.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nDate: {_Date.now()}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n".encode() + body
            )
            self.server.log(self.peer, "-", "-", status, time.perf_counter())
        self._close()

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def idle_for(self, now: float) -> float:
        """Seconds since the client last sent anything."""
        return now - self.last_active


async def _serve(sock: socket.socket, server: Server, ready: str) -> None:
    """Serve on ``sock`` until SIGINT or SIGTERM; print ``ready`` once both are in place."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    pending: set[asyncio.Task[Any]] = set()

    def accept_one() -> None:
        # One connection per wake-up, not asyncio's accept-everything loop:
        # with --workers, every worker is woken and each takes one, so a
        # burst of connections is spread instead of landing on one process.
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another worker took it, or the client gave up
        except OSError as exc:  # EMFILE and the like: say so, keep serving
            print(f"rlambda.local: accept failed: {exc}", file=sys.stderr)
            return
        conn.setblocking(False)
        task = loop.create_task(loop.connect_accepted_socket(lambda: _Connection(server), conn))
        pending.add(task)
        task.add_done_callback(pending.discard)

    loop.add_reader(sock.fileno(), accept_one)
    # One write(2) per line: with --workers, print()'s separate writes of the
    # text and its newline interleaved between processes ("AB\n\n").
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), (ready + "\n").encode())

    async def reap_idle() -> None:
        # One sweep every few seconds instead of a timer per request.
        while True:
            await asyncio.sleep(5)
            now = time.monotonic()
            for conn in list(server.connections):
                if conn.idle_for(now) > IDLE_TIMEOUT_S:
                    conn._close()

    reaper = loop.create_task(reap_idle())
    try:
        await stop.wait()
    finally:
        reaper.cancel()
        loop.remove_reader(sock.fileno())
        sock.close()
        for task in list(pending):
            task.cancel()
        for conn in list(server.connections):
            conn._close()
        # Let the transports finish closing before the loop goes away.
        await asyncio.sleep(0)


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket; OSError (port in use, bad host) propagates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR lets a restart bind while old connections linger in
        # TIME_WAIT; it does not let two servers share a port on Linux.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _load_handler() -> Handler:
    """Import the Lambda entry point (starts R) from the repository root."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    # rpy2 reports how it found R at INFO: useful in CloudWatch, noise on a terminal.
    logging.getLogger("rpy2").setLevel(logging.WARNING)
    import handler  # noqa: PLC0415 - imported late: R starts only once the port is ours

    return handler.lambda_handler


def _warm(handler: Handler) -> str:
    """Load the model before the first client (GET /ping); a one-line status."""
    event = build_event("GET", "/ping", [("Host", "localhost")], b"", "127.0.0.1")
    status, _, data = render_result(handler(event, LambdaContext(event["requestContext"]["requestId"])))
    try:
        doc = json.loads(data)
    except ValueError:
        doc = {}
    if status == 200:
        model = doc.get("model") or {}
        return f"model {model.get('uri')} (version {model.get('version')})"
    return f"the model is not loaded ({status}: {doc.get('message', data[:200])}); /ping answers {status}"


def _run_worker(sock: socket.socket, web: Path, access_log: bool) -> int:
    handler = _load_handler()
    ready = f"rlambda.local: [{os.getpid()}] {_warm(handler)}"
    asyncio.run(_serve(sock, Server(handler, StaticFiles(web), access_log), ready))
    return 0


def _run_workers(sock: socket.socket, web: Path, access_log: bool, workers: int) -> int:
    """Fork ``workers`` processes on one listening socket; stop them all on SIGINT/SIGTERM."""
    children: list[int] = []
    # Block the stop signals while forking so a child cannot miss its handler.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
            code = 1
            try:
                code = _run_worker(sock, web, access_log)
            except KeyboardInterrupt:
                code = 0
            except BaseException:  # os._exit below would swallow it: show why the worker died
                traceback.print_exc()
            finally:
                os._exit(code)
        children.append(pid)
    sock.close()
    stop = {"signal": 0}

    def forward(signum: int, _frame: Any) -> None:
        stop["signal"] = signum
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    worst = 0
    for child in children:
        while True:
            try:
                _, status = os.waitpid(child, 0)
                break
            except ChildProcessError:
                status = 0
                break
        code = os.waitstatus_to_exitcode(status)
        if code != 0 and not stop["signal"]:
            forward(signal.SIGTERM, None)  # one worker died: stop the rest rather than limp on
        worst = worst or (code if code > 0 else 0)
    return worst


def _port(text: str) -> int:
    """argparse type: a TCP port number (0 = any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not between 0 and 65535")
    return port


def main(argv: list[str] | None = None) -> int:
    """Run the local server; the exit code is 2 when the port cannot be bound."""
    parser = argparse.ArgumentParser(prog="python -m rlambda.local", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("HOST") or "127.0.0.1", help="address to listen on (HOST)")
    parser.add_argument("--port", type=_port, default=os.environ.get("PORT") or "8080", help="port (PORT; 0 = any free port)")
    parser.add_argument("--web", type=Path, default=DEFAULT_WEB, help="directory of the page's files (default: web/)")
    parser.add_argument("--workers", type=int, default=1, help="processes, each with its own R (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no access log lines")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        sock = _bind(args.host, args.port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            reason = "is already in use: stop the other server or choose another port (--port, PORT=)"
        else:
            reason = f"cannot be used: {exc.strerror or exc}"
        print(f"rlambda.local: {args.host}:{args.port} {reason}", file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"rlambda.local: serving the API and the page on http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
    if not (args.web / "index.html").is_file():
        print(f"rlambda.local: no index.html in {args.web}; serving the API only", file=sys.stderr)
    try:
        if args.workers == 1:
            code = _run_worker(sock, args.web, not args.quiet)
        else:
            code = _run_workers(sock, args.web, not args.quiet, args.workers)
    except KeyboardInterrupt:  # Ctrl-C while R was still starting
        code = 0
    print("rlambda.local: stopped", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
