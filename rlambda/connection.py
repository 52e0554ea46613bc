"""One client connection of the local server: uvicorn's httptools protocol, with what uvicorn leaves out.

uvicorn (with httptools, i.e. llhttp) parses HTTP/1.1 and refuses request
smuggling on its own. This subclass adds what uvicorn leaves to the
application and makes the answers the server gives by itself error
documents with CORS (``answer``, set by rlambda.local):

- a deadline for the request head (uvicorn's only timer is the keep-alive
  one, which stops at the first byte: a client sending one byte a second
  kept its connection for ever);
- size limits for the head and for trailers (httptools has none) and for
  the body (Content-Length checked up front, chunked bodies counted);
- its ``limit_concurrency`` 503, and its 400 for malformed HTTP, as data;
- one ``send(2)`` per answer instead of two.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Callable

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

# Request line plus headers, and trailers, each at most this many bytes.
MAX_HEAD_BYTES = 64 * 1024
# API Gateway's payload limit; the handler applies its own, lower one.
MAX_BODY_BYTES = 10 * 1024 * 1024
# The head deadline reaches uvicorn's (spawned) workers through the environment.
ENV_HEAD_TIMEOUT = "RLAMBDA_LOCAL_HEADER_TIMEOUT"

Answer = Callable[[int, str, "str | None"], "tuple[int, list[tuple[bytes, bytes]], bytes]"]


def _plain(status: int, message: str, origin: str | None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    data = message.encode()
    return status, [(b"content-type", b"text/plain"), (b"content-length", str(len(data)).encode())], data


class Hooks:
    """What rlambda.local supplies once a worker is up: the error document, and the access line."""

    answer: Answer = staticmethod(_plain)
    log: Callable[[str, str, str, int, float], None] = staticmethod(lambda *args: None)


class _OneWrite:
    """The transport as one answer sees it: its head and body leave in one send(2).

    uvicorn writes an answer's head and body separately; on loopback each
    send(2) costs about as much as scoring a row. Once the answer has
    started, writes are held until it is complete (``flush``: when uvicorn
    reports the answer done, or closes); ``100 Continue`` goes out at once.
    """

    def __init__(self, transport: Any, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        if self._cycle.response_started:
            self._parts.append(data)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        if self._parts:
            data = b"".join(self._parts)
            self._parts.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Connection(HttpToolsProtocol):
    """uvicorn's httptools connection, with the limits uvicorn leaves out and every answer as data."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout = float(os.environ.get(ENV_HEAD_TIMEOUT) or 10)
        # uvicorn answers its concurrency limit with a plain-text 503;
        # the limit is still config.limit_concurrency, checked below.
        self._limit, self.limit_concurrency = self.limit_concurrency, None
        self._app = self.app
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = False
        self._head_done = False
        self._unparsed = self._raw_head = 0
        self._completed = False
        self._head = self._trailer = self._body = 0
        self._origin: str | None = None
        self._refusal: _Refused | None = None

    # -- the head deadline: uvicorn has none (its keep-alive timer stops at the first byte)
    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.head_timeout, self._head_late)

    def _head_late(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        if self._in_head:
            self._answer(408, f"The request head did not arrive within {self.head_timeout:g} s.")
        else:
            self.transport.close()  # an idle connection: nothing to answer

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    # -- parsing, with limits and data answers
    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self.parser is None:
            return
        # httptools holds a header line until it ends, so the head is also
        # counted in raw bytes: a read that leaves us inside a head counts
        # whole, unless a message ended within it (then the head's bytes
        # cannot be told apart; a head is never longer than two reads).
        # Trailers and chunk-size lines that never end are bounded the same
        # way: every callback resets ``_unparsed``, so bytes count there
        # only when a whole read made no progress.
        counted = not self._head_done
        self._completed = False
        pending = self._unparsed + len(data)
        self._unparsed = -1
        try:
            self.parser.feed_data(data)
            if self._in_head:
                self._raw_head = self._raw_head + len(data) if counted and not self._completed else 0
                if self._raw_head > MAX_HEAD_BYTES:
                    raise _Refused(431, f"The request head is too large: more than {MAX_HEAD_BYTES} bytes.")
            if self._unparsed == -1:
                self._unparsed = pending
                if pending > MAX_HEAD_BYTES:
                    raise _Refused(431, f"A line of the request is too large: more than {MAX_HEAD_BYTES} bytes.")
            else:
                self._unparsed = 0
        except _Refused as exc:
            self._answer(exc.status, str(exc))
        except httptools.HttpParserCallbackError:
            refusal, self._refusal = self._refusal, None
            if refusal is None:
                raise
            self._answer(refusal.status, str(refusal))
        except httptools.HttpParserUpgrade:
            self._answer(400, "Protocol upgrades are not supported.")
        except httptools.HttpParserError as exc:
            self._answer(400, f"The request is not valid HTTP/1.1 ({exc}).")

    def _refuse(self, status: int, message: str) -> None:
        self._refusal = _Refused(status, message)
        raise self._refusal

    def _count_head(self, size: int) -> None:
        """Add ``size`` bytes of request line or headers; refuse past the head limit."""
        self._head += size
        if self._head > MAX_HEAD_BYTES:
            self._refuse(431, f"The request head is too large: more than {MAX_HEAD_BYTES} bytes of request line and headers.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_done = True, False
        self._unparsed = self._head = self._trailer = self._body = 0
        self._origin = None

    def on_url(self, url: bytes) -> None:
        self._unparsed = 0
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._unparsed = 0
        size = len(name) + len(value) + 4
        if self._head_done:
            # A trailer: counted, never added to the request's headers.
            self._trailer += size
            if self._trailer > MAX_HEAD_BYTES:
                self._refuse(431, f"The trailers are too large: more than {MAX_HEAD_BYTES} bytes.")
            return
        self._count_head(size)
        lower = name.lower()
        if lower == b"origin":
            self._origin = value.decode("latin-1")
        elif lower == b"content-length" and int(value) > MAX_BODY_BYTES:
            # llhttp has checked the digits already.
            self._refuse(413, f"The body is too large: {int(value)} bytes, more than the {MAX_BODY_BYTES} this server accepts.")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._unparsed = self._raw_head = 0
        self._in_head, self._head_done = False, True
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        busy = self._limit is not None and (
            len(self.connections) > self._limit or len(self.tasks) >= self._limit
        )
        self.app = _busy if busy else self._app
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:
            shim = cycle.transport = _OneWrite(self.transport, cycle)
            done = cycle.on_response

            def flush_then_done() -> None:
                shim.flush()
                done()

            cycle.on_response = flush_then_done

    def on_body(self, body: bytes) -> None:
        self._unparsed = 0
        self._body += len(body)
        if self._body > MAX_BODY_BYTES:
            self._refuse(413, f"The body is too large: more than the {MAX_BODY_BYTES} bytes this server accepts.")
        super().on_body(body)

    def on_chunk_header(self) -> None:
        self._unparsed = 0

    def on_message_complete(self) -> None:
        self._unparsed = 0
        self._head_done = False
        self._completed = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        self._answer(400, msg)

    def _answer(self, status: int, message: str) -> None:
        """An error document from the server itself, then close (the stream cannot be trusted)."""
        if self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete:
            self.transport.close()  # an answer is half-written: closing is all that is left
            return
        code, headers, data = Hooks.answer(status, message, self._origin)
        peer = self.client[0] if self.client else "-"
        Hooks.log(peer, "-", "-", code, time.perf_counter())
        out = [STATUS_LINE[code]]
        for name, value in self.server_state.default_headers + headers:
            out += [name, b": ", value, b"\r\n"]
        out += [b"\r\n", data]
        self.transport.write(b"".join(out))
        self.transport.close()
        if self.cycle is not None:
            self.cycle.disconnected = True
            self.cycle.message_event.set()


async def _busy(scope: dict[str, Any], receive: Any, send: Any) -> None:
    # More connections than --max-connections: uvicorn's check, our answer.
    origin = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"origin"), None)
    status, headers, data = Hooks.answer(503, "The server has too many connections; retry shortly.", origin)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
