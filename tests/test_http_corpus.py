"""Malformed HTTP against the real ``make serve`` process, over a raw socket.

The request-smuggling and slowloris classes a hand-written parser got wrong:
each request gets a 4xx error document (with CORS) or a closed connection,
never a 2xx, never a traceback in the server's log, and the next client is
served. The server runs with a 2 s header deadline and a CORS origin list,
so both can be seen.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from localserver import LocalServer

ORIGIN = "https://app.example"
BODY = b'{"gre": 800, "gpa": 4, "rank": 1}'
POST = b"POST /predict HTTP/1.1\r\nHost: x\r\nOrigin: " + ORIGIN.encode() + b"\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    srv = LocalServer(model_path, tmp_path_factory.mktemp("http-corpus"), "--header-timeout", "2",
                      "--max-connections", "4", env={"CORS_ORIGINS": ORIGIN})
    yield srv
    srv.stop()


def exchange(server: LocalServer, payload: bytes, pause: float = 0.0, timeout: float = 20, prefix: bytes = b"") -> bytes:
    """Send ``prefix``, then ``payload`` (byte by byte with ``pause`` between, if given); read until the server closes."""
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        try:
            sock.sendall(prefix)
            if pause:
                for i in range(len(payload)):
                    sock.sendall(payload[i : i + 1])
                    time.sleep(pause)
            else:
                sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused early and closed: what it said is read below
        out = b""
        try:
            while data := sock.recv(65536):
                out += data
        except ConnectionResetError:
            pass  # a close with our unread bytes still queued: a closed connection
        return out


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def assert_refused(server: LocalServer, raw: bytes, statuses: set[int], origin: bool = True) -> None:
    """A 4xx error document with CORS, or a closed connection; then the next client is served.

    ``origin``: the request sent its Origin header before the fault, so the
    answer allows that origin (CORS_ORIGINS lists it); without one, the
    answer still carries the other CORS headers and ``Vary: Origin``.
    """
    if raw:
        status, headers, body = parse(raw)
        assert status in statuses, raw[:300]
        assert len(re.findall(rb"HTTP/1\.1 \d{3} ", raw)) == 1, raw[:600]  # nothing of the request was answered as well
        doc = json.loads(body)
        assert doc["httpStatus"] == status and doc["errorType"] and doc["message"], doc
        assert doc["request_id"] == headers["x-amzn-requestid"]
        assert headers.get("access-control-allow-origin") == (ORIGIN if origin else None)
        assert headers["vary"] == "Origin" and "access-control-allow-methods" in headers
        assert headers["content-type"] == "application/json"
    conn = server.connection()
    conn.request("POST", "/predict", body=BODY, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["result"] is True
    conn.close()
    assert "Traceback" not in server.log()


CORPUS = [
    ("content-length-and-chunked", POST + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("chunked-and-content-length", POST + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"),
    ("two-content-lengths", POST + b"Content-Length: 33\r\nContent-Length: 34\r\n\r\n" + BODY + b" "),
    ("space-before-colon", POST + b"Transfer-Encoding : chunked\r\n\r\n21\r\n" + BODY + b"\r\n0\r\n\r\n"),
    ("obsolete-line-folding", POST + b"Content-Length: 33\r\nX-Folded: a\r\n b\r\n\r\n" + BODY),
    ("folded-transfer-encoding", POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n21\r\n" + BODY + b"\r\n0\r\n\r\n"),
    ("non-ascii-digit-length", POST + "Content-Length: ²\r\n\r\n".encode() + BODY),
    ("signed-content-length", POST + b"Content-Length: +33\r\n\r\n" + BODY),
    ("signed-chunk-size", POST + b"Transfer-Encoding: chunked\r\n\r\n+21\r\n" + BODY + b"\r\n0\r\n\r\n"),
    ("negative-chunk-size", POST + b"Transfer-Encoding: chunked\r\n\r\n-21\r\n" + BODY + b"\r\n0\r\n\r\n"),
    ("hex-prefixed-chunk-size", POST + b"Transfer-Encoding: chunked\r\n\r\n0x21\r\n" + BODY + b"\r\n0\r\n\r\n"),
    ("underscore-chunk-size", POST + b"Transfer-Encoding: chunked\r\n\r\n2_1\r\n" + BODY + b"\r\n0\r\n\r\n"),
    ("chunk-without-crlf", POST + b"Transfer-Encoding: chunked\r\n\r\n21\r\n" + BODY + b"0\r\n\r\n"),
    ("unknown-transfer-coding", POST + b"Transfer-Encoding: gzip\r\n\r\n" + BODY),
    ("oversized-trailer", POST + b"Transfer-Encoding: chunked\r\n\r\n21\r\n" + BODY + b"\r\n0\r\nX-T: "
     + b"a" * 100_000 + b"\r\n\r\n"),
    ("oversized-header", b"GET /ping HTTP/1.1\r\nHost: x\r\nOrigin: " + ORIGIN.encode() + b"\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"),
    ("header-line-never-ends", b"GET /ping HTTP/1.1\r\nHost: x\r\nOrigin: " + ORIGIN.encode() + b"\r\nX-Big: " + b"a" * 300_000),
    ("bare-lf", b"GET /ping HTTP/1.1\nHost: x\n\n"),
    ("not-http", b"NONSENSE\r\n\r\n"),
    ("content-length-too-large", POST + b"Content-Length: 99999999999\r\n\r\n"),
    ("chunked-body-too-large", POST + b"Transfer-Encoding: chunked\r\n\r\n"
     + (b"100000\r\n" + b" " * 0x100000 + b"\r\n") * 11 + b"0\r\n\r\n"),
]


@pytest.mark.parametrize("name,payload", CORPUS, ids=[c[0] for c in CORPUS])
def test_malformed_request_is_refused(server: LocalServer, name: str, payload: bytes) -> None:
    # WHEN the server reads a malformed or oversized request THEN it refuses it and keeps serving
    assert_refused(server, exchange(server, payload), {400, 413, 431}, origin=b"Origin: " in payload)


def test_a_head_sent_one_byte_a_second_is_cut_off(server: LocalServer) -> None:
    # GIVEN a 2 s header deadline WHEN a client sends its head one byte a second (slowloris)
    started = time.monotonic()
    raw = exchange(server, b"ost: x\r\n\r\n", pause=1.0, prefix=b"GET /ping HTTP/1.1\r\nOrigin: " + ORIGIN.encode() + b"\r\nH")
    # THEN the server answers 408 after about 2 s, not after the 40 s the head would take
    assert time.monotonic() - started < 8
    assert parse(raw)[0] == 408
    assert_refused(server, raw, {408})


def test_a_silent_connection_is_closed(server: LocalServer) -> None:
    # GIVEN a connection that never sends a byte THEN the server closes it at the deadline, answering nothing
    with socket.create_connection((server.host, server.port), timeout=20) as sock:
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert 1.5 < time.monotonic() - started < 8


def test_more_connections_than_the_limit_get_503_as_data(server: LocalServer) -> None:
    # GIVEN --max-connections 4 and four connections held open
    held = [socket.create_connection((server.host, server.port), timeout=20) for _ in range(4)]
    try:
        time.sleep(0.2)
        # WHEN a fifth asks THEN it gets a 503 error document with CORS, and the connection closes
        raw = exchange(server, b"GET /ping HTTP/1.1\r\nHost: x\r\nOrigin: " + ORIGIN.encode() + b"\r\n\r\n")
        status, headers, body = parse(raw)
        assert status == 503 and json.loads(body)["httpStatus"] == 503
        assert headers["access-control-allow-origin"] == ORIGIN and headers["retry-after"] == "1"
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert_refused(server, b"", set())


def test_well_formed_edges_still_work(server: LocalServer) -> None:
    # Chunked with an extension and a small trailer, then a pipelined GET: valid HTTP is served
    chunked = (POST + b"Transfer-Encoding: chunked\r\n\r\n10;ext=1\r\n" + BODY[:16] + b"\r\n11\r\n" + BODY[16:]
               + b"\r\n0\r\nX-Trailer: fine\r\n\r\n")
    out = exchange(server, chunked + b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200 OK") == 2 and b'"result":true' in out
