"""Bad input, from a corpus of data files: every malformed request is a 4xx that names the problem.

Each tests/corpus/*.json holds one request (method, path, query, headers and
body, body_base64 or a generated body) and what must come back: the status
and words the message must contain. Every case goes three ways, where the
way is meaningful:

* as a direct invocation (the body parsed the way Lambda's runtime parses
  it, handed to the handler as the event);
* as an API Gateway REST event built in this process (``rlambda.local``'s
  event builder, plus the case's ``event`` overrides for shapes a real HTTP
  request cannot produce);
* over real HTTP to ``python -m rlambda.local``.

After every case the next valid request must get the right answer, and the
server must never answer 5xx or die.
"""

from __future__ import annotations

import base64
import json
import math
import socket
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from conftest import LambdaContext
from test_local_server import LocalServer

CORPUS = Path(__file__).resolve().parent / "corpus"
VALID = b'{"gre": 640, "gpa": 3.3, "rank": 2}'


def load_cases() -> list[dict[str, Any]]:
    """Every corpus case, in file order."""
    return [json.loads(p.read_text()) for p in sorted(CORPUS.glob("*.json"))]


CASES = load_cases()


def body_of(request: dict[str, Any]) -> bytes | None:
    """The request body's bytes (generated bodies are built here, not stored)."""
    if "body" in request:
        return request["body"].encode("utf-8")
    if "body_base64" in request:
        return base64.b64decode(request["body_base64"])
    gen = request.get("body_generate")
    if gen:
        return (gen["prefix"] + gen["repeat"] * gen["count"] + gen["suffix"]).encode("utf-8")
    return None


def target_of(request: dict[str, Any]) -> str:
    """Path plus query, as on the request line."""
    query = request.get("query")
    return request["path"] + ("?" + query if query else "")


def message_of(doc: Any) -> str:
    """The error message of a JSON error document (the handler's or the server's own)."""
    return str(doc.get("message", "")) if isinstance(doc, dict) else ""


def check(case: dict[str, Any], status: int, doc: Any, expect: dict[str, Any], record: Callable[[str, Any], None]) -> None:
    """The answer is the expected status; errors name the problem; successes carry a finite probability."""
    record("observed", f"{status} {message_of(doc)[:160]}")
    assert status < 500, (case["id"], status, doc)
    assert status == expect["status"], (case["id"], status, doc)
    if status >= 400:
        message = message_of(doc).lower()
        missing = [w for w in expect["words"] if w.lower() not in message]
        assert not missing, f"{case['id']}: message {message_of(doc)!r} lacks {missing}"
        if "errorType" in doc:  # the handler's document (the server's own refusals are shorter)
            assert doc["httpStatus"] == status and doc["request_id"]
            if expect.get("field"):
                assert expect["field"] in [e["field"] for e in doc["errors"]], doc
    else:
        assert isinstance(doc["result"], bool)
        assert math.isfinite(doc["probability"]) and 0 <= doc["probability"] <= 1


# -- the three ways in ------------------------------------------------------------


@pytest.fixture(scope="module")
def app(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An App with the deployed defaults (6 MB body, 10,000 rows)."""
    from rlambda.app import App
    from rlambda.settings import Settings

    return App(Settings(model_uri=str(model_path), cache_dir=str(tmp_path_factory.mktemp("corpus-cache"))))


def invoke_direct(app: Any, payload: Any) -> tuple[int, Any]:
    """Status and document of a direct invocation (errors are raised with the JSON as message)."""
    from rlambda.errors import HTTPError

    try:
        return 200, app.handle(payload, LambdaContext())
    except HTTPError as exc:
        doc = json.loads(str(exc))
        assert doc["httpStatus"] == exc.status
        return exc.status, doc


def invoke_event(app: Any, request: dict[str, Any], body: bytes | None, overrides: dict[str, Any]) -> tuple[int, Any]:
    """Status and document of an API Gateway REST event run in this process."""
    from rlambda.local import build_event

    event = build_event(request["method"], target_of(request), list(request["headers"].items()), body or b"", "127.0.0.1")
    event.update(overrides)
    answer = app.handle(event, LambdaContext())
    assert isinstance(answer["statusCode"], int) and isinstance(answer["body"], str)
    return answer["statusCode"], json.loads(answer["body"]) if answer["body"] else None


def exchange(port: int, method: str, target: str, headers: dict[str, str], body: bytes | None) -> tuple[int, bytes]:
    """One request on its own connection; large bodies wait for 100 Continue, as curl does.

    Waiting lets the server refuse an oversized body from its head alone
    without the client being cut off mid-send.
    """
    head = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    big = body is not None and len(body) > 1 << 20
    if body is not None:
        head.append(f"Content-Length: {len(body)}")
    if big:
        head.append("Expect: 100-continue")
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        data = b""
        if big:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            if data.startswith(b"HTTP/1.1 100 "):
                data = data.split(b"\r\n\r\n", 1)[1]
                sock.sendall(body)
        elif body:
            sock.sendall(body)
        while chunk := sock.recv(1 << 20):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), payload


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """The local server, quiet (a 70 KB request line would flood the log)."""
    srv = LocalServer(model_path, tmp_path_factory.mktemp("corpus-local"), "--quiet")
    yield srv
    code = srv.stop()
    assert code == 0 and "Traceback" not in srv.log()


@pytest.fixture(scope="module")
def expected_valid(app: Any) -> Any:
    """The answer to the valid request, for comparison after every bad one."""
    status, doc = invoke_direct(app, json.loads(VALID))
    assert status == 200 and doc["result"] in (True, False)
    return doc


DIRECT = [c for c in CASES if c.get("direct")]
HTTP = [c for c in CASES if not c.get("event_only")]


def test_corpus_is_big_enough_and_well_formed() -> None:
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids))
    assert sum(c["expect"]["status"] >= 400 for c in CASES) >= 60
    for case in CASES:
        assert case["request"]["method"] and case["request"]["path"].startswith("/")
        assert case["expect"]["status"] == 200 or case["expect"]["words"], case["id"]


@pytest.mark.parametrize("case", DIRECT, ids=[c["id"] for c in DIRECT])
def test_direct_invocation(case: dict[str, Any], app: Any, expected_valid: Any, record_property: Any) -> None:
    # GIVEN the body as Lambda's runtime would parse it (json.loads: NaN and Infinity pass)
    payload = json.loads(body_of(case["request"]) or b"null")
    # WHEN it is the event of a direct invocation
    status, doc = invoke_direct(app, payload)
    # THEN a 4xx that names the problem (or the tolerated 200)
    expect = dict(case["expect"])
    if isinstance(case["direct"], dict):
        expect.update(case["direct"])
    check(case, status, doc, expect, record_property)
    # AND the next valid request is answered correctly
    assert invoke_direct(app, json.loads(VALID)) == (200, expected_valid)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_api_gateway_event(case: dict[str, Any], app: Any, expected_valid: Any, record_property: Any) -> None:
    request = case["request"]
    status, doc = invoke_event(app, request, body_of(request), case.get("event", {}))
    check(case, status, doc, case["expect"], record_property)
    ok = {"method": "POST", "path": "/predict", "headers": {"Content-Type": "application/json"}}
    assert invoke_event(app, ok, VALID, {}) == (200, expected_valid)


@pytest.mark.parametrize("case", HTTP, ids=[c["id"] for c in HTTP])
def test_over_http(case: dict[str, Any], server: LocalServer, expected_valid: Any, record_property: Any) -> None:
    request = case["request"]
    status, raw = exchange(server.port, request["method"], target_of(request), request["headers"], body_of(request))
    doc = json.loads(raw) if raw else None
    expect = {**case["expect"], **case["expect"].get("http", {})}
    check(case, status, doc, expect, record_property)
    # the server is alive and the next valid request gets the right answer
    assert server.proc.poll() is None
    status, raw = exchange(server.port, "POST", "/predict", {"Content-Type": "application/json"}, VALID)
    assert (status, json.loads(raw)) == (200, expected_valid)
