"""``make serve``: the API and the page on one local port, no AWS needed.

Like chalice's local mode and ``sam local start-api``, every API request
becomes an API Gateway REST (payload 1.0) proxy event handed to the very
``handler.lambda_handler`` that runs in Lambda, so routes, status codes,
headers and errors are the deployed ones. Files under ``web/`` (the page and
its ``config.json``) are served here, as S3 would serve them; everything
else, unknown paths included, goes to the handler.

HTTP itself is uvicorn's with httptools (llhttp, Node's parser): this module
is an ASGI app; rlambda.connection is the small subclass of uvicorn's
protocol that adds what uvicorn leaves to the application (a deadline for
the request head; head, trailer and body size limits) and makes every answer
the server gives on its own (400 for malformed HTTP, 408, 413, 431, 503) an
error document with CORS headers, rendered here by the handler's app. The handler runs inline on the event loop: R is single-threaded
anyway, and so only the loop's thread ever touches it. ``--workers N`` runs N
processes (uvicorn's supervisor), each with its own R, on one socket.

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
import uuid
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, unquote

from .connection import ENV_HEAD_TIMEOUT, Connection, Hooks
from .errors import BadRequest, HeadersTooLarge, HTTPError, PayloadTooLarge, Problem, RequestTimeout, ServerBusy

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEB = ROOT / "web"
STAGE = "local"
LAMBDA_TIMEOUT_S = 30.0
# A body must arrive within this once its head has (API Gateway's own
# integration timeout is 29 s).
BODY_TIMEOUT_S = 30.0

Handler = Callable[[dict[str, Any], Any], Any]

# The process's options reach uvicorn's worker processes (spawned, not
# forked) through the environment.
_ENV_WEB = "RLAMBDA_LOCAL_WEB"
_ENV_QUIET = "RLAMBDA_LOCAL_QUIET"

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

    ``target`` is the request line's path and query. ``headers`` holds the
    last value of a repeated header, ``multiValueHeaders`` all of them. A
    body that is not UTF-8 is sent base64-encoded with ``isBase64Encoded``.
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
    lower = {k.lower(): v for k, v in single.items()}
    host = lower.get("host", "localhost")
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
                "userAgent": lower.get("user-agent"),
                "apiKey": lower.get("x-api-key"),
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


class _Worker:
    """What one serving process holds once R is up: the handler and the app's error rendering."""

    handler: Handler | None = None
    refuse: Callable[[Any, str, str | None], dict[str, Any]] | None = None
    access_log = True


def _log(peer: str, method: str, target: str, status: int, started: float) -> None:
    """One access line on stderr: client, request, status, latency."""
    if _Worker.access_log:
        if len(target) > 200 or not target.isprintable():
            target = repr(target[:200])
        ms = (time.perf_counter() - started) * 1e3
        sys.stderr.write(f'{peer} "{method} {target}" {status} {ms:.2f}ms\n')


def _error_answer(status: int, message: str, origin: str | None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The handler's own error document (errorType, httpStatus, request_id, CORS) for an error the server finds."""
    kinds: dict[int, type[HTTPError]] = {400: BadRequest, 408: RequestTimeout, 413: PayloadTooLarge,
                                         431: HeadersTooLarge}
    error = ServerBusy(message) if status == 503 else kinds[status](message, [Problem("request", message)])
    request_id = str(uuid.uuid4())
    assert _Worker.refuse is not None  # no client is served before R is up
    code, headers, data = render_result(_Worker.refuse(error, request_id, origin))
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    raw += [(b"x-amzn-RequestId", request_id.encode()), (b"content-length", str(len(data)).encode()),
            (b"connection", b"close")]
    return code, raw, data


class Gateway:
    """The ASGI app: page files, or request -> API Gateway event -> ``lambda_handler`` -> answer."""

    def __init__(self, web: Path) -> None:
        self.static = StaticFiles(web)

    @classmethod
    def from_env(cls) -> "Gateway":
        """uvicorn's factory: the options ``main`` put in the environment."""
        _Worker.access_log = os.environ.get(_ENV_QUIET) != "1"
        return cls(Path(os.environ.get(_ENV_WEB) or DEFAULT_WEB))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    _start_worker()
                except Exception as exc:  # uvicorn stops the worker and says why
                    await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.perf_counter()
        method: str = scope["method"]
        target = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        peer = scope["client"][0] if scope.get("client") else "-"
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        message = await receive()
        body = message.get("body", b"")
        if message.get("more_body"):
            parts = [body]
            try:
                async with asyncio.timeout(BODY_TIMEOUT_S):
                    while message.get("more_body"):
                        message = await receive()
                        parts.append(message.get("body", b""))
            except TimeoutError:
                origin = next((v for k, v in headers if k == "origin"), None)
                status, raw, data = _error_answer(408, f"The body did not arrive within {BODY_TIMEOUT_S:g} s.", origin)
                _log(peer, method, target, status, started)
                await send({"type": "http.response.start", "status": status, "headers": raw})
                await send({"type": "http.response.body", "body": data})
                return
            body = b"".join(parts)
        if message["type"] == "http.disconnect":
            return  # the client left, or the server refused the rest (413, malformed)
        if method in ("GET", "HEAD"):
            file = self.static.find(scope["raw_path"].decode("latin-1"))
            if file is not None:
                try:
                    data = file.read_bytes()
                except OSError:
                    data = None
                if data is not None:
                    _log(peer, method, target, 200, started)
                    await send({"type": "http.response.start", "status": 200, "headers": [
                        (b"content-type", self.static.content_type(file).encode()),
                        (b"cache-control", b"no-cache"),
                        (b"x-content-type-options", b"nosniff"),
                        (b"content-length", str(len(data)).encode()),
                    ]})
                    await send({"type": "http.response.body", "body": data})
                    return
        request_id = str(uuid.uuid4())
        event = build_event(method, target, headers, body, peer, request_id)
        assert _Worker.handler is not None
        try:
            result = _Worker.handler(event, LambdaContext(request_id))
        except Exception as exc:  # what API Gateway answers when the function fails
            print(f"rlambda.local: handler raised {type(exc).__name__}: {exc}", file=sys.stderr)
            result = None
        status, out_headers, data = render_result(result)
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out_headers
               if k.lower() not in ("content-length", "connection", "transfer-encoding", "date")]
        raw.append((b"x-amzn-RequestId", request_id.encode()))
        if status not in (204, 304) and status >= 200:
            raw.append((b"content-length", str(len(data)).encode()))
        # Logged before the answer leaves, so a client that has its answer
        # can rely on the line being written (the tests do).
        _log(peer, method, target, status, started)
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": data})


Hooks.answer = staticmethod(_error_answer)
Hooks.log = staticmethod(_log)


def _start_worker() -> None:
    """Start R, load the model (GET /ping) and print this worker's ready line."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    # rpy2 reports how it found R at INFO: useful in CloudWatch, noise on a terminal.
    logging.getLogger("rpy2").setLevel(logging.WARNING)
    # Starting R replaces the SIGINT handler uvicorn installed for its
    # graceful shutdown (Ctrl-C then surfaced as a KeyboardInterrupt inside
    # the event loop): put the server's handlers back.
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    import handler  # noqa: PLC0415 - imported late: R starts in the worker

    for sig, previous in saved.items():
        if signal.getsignal(sig) is not previous and previous is not None:
            signal.signal(sig, previous)

    _Worker.handler = handler.lambda_handler
    _Worker.refuse = handler.app.refuse
    ready = f"rlambda.local: [{os.getpid()}] {_warm(handler.lambda_handler)}"
    # One write(2) per line: with --workers, print()'s separate writes of the
    # text and its newline interleaved between processes ("AB\n\n").
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), (ready + "\n").encode())


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


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket; OSError (port in use, bad host) propagates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets that do,
    # and without it a header and a body written apart wait for the client's
    # delayed ACK (40 ms an answer).
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    try:
        # SO_REUSEADDR lets a restart bind while old connections linger in
        # TIME_WAIT; it does not let two servers share a port on Linux.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


LISTEN_BACKLOG = 1024


def _serve(sock: socket.socket, workers: int, max_connections: int) -> None:
    """Run uvicorn on ``sock``: in this process, or in ``workers`` supervised processes."""
    from uvicorn import Config, Server
    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        """uvicorn's supervisor, keeping the shared socket's accept queue long.

        Each worker accepts one connection per wake-up (``backlog=1`` below:
        asyncio accepts up to ``backlog`` connections per wake-up), so a burst
        of connections is spread over the workers instead of all landing on
        the first to wake. asyncio also passes that number to listen(2) when
        a worker starts, which would shorten the kernel's queue for everyone:
        the supervisor puts it back on every round of its health check.
        """

        def keep_subprocess_alive(self) -> None:
            super().keep_subprocess_alive()
            sock.listen(LISTEN_BACKLOG)

    config = Config(
        "rlambda.local:Gateway.from_env",
        factory=True,
        http=Connection,
        ws="none",
        lifespan="on",
        loop="asyncio",
        workers=workers,
        log_config=None,
        log_level="warning",
        access_log=False,  # ours is written by the app, before the answer leaves
        server_header=False,
        limit_concurrency=max_connections,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
        backlog=LISTEN_BACKLOG if workers == 1 else 1,
    )
    if workers == 1:
        Server(config).run(sockets=[sock])
    else:
        Supervisor(config, sockets=[sock]).run()


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
    parser.add_argument("--max-connections", type=int, default=1000,
                        help="open connections per worker before answering 503 (default 1000)")
    parser.add_argument("--header-timeout", type=float, default=10.0,
                        help="seconds a client has to send a request's head (default 10)")
    parser.add_argument("--quiet", action="store_true", help="no access log lines")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.max_connections < 1 or args.header_timeout <= 0:
        parser.error("--max-connections and --header-timeout must be positive")
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
    os.environ[_ENV_WEB] = str(args.web.resolve())
    os.environ[_ENV_QUIET] = "1" if args.quiet else "0"
    os.environ[ENV_HEAD_TIMEOUT] = str(args.header_timeout)
    try:
        _serve(sock, args.workers, args.max_connections)
        code = 0
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it shut down for
        code = 0
    except SystemExit as exc:  # a worker that could not start (uvicorn's exit 3)
        code = exc.code if isinstance(exc.code, int) else 1
    print("rlambda.local: stopped", flush=True)
    return code


if __name__ == "__main__":
    # uvicorn imports the app as rlambda.local: run that module's main too,
    # so the protocol and the app share one copy of the worker's state.
    from rlambda import local

    sys.exit(local.main())
