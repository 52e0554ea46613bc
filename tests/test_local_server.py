"""The local server (``make serve``) over real HTTP, with real R.

Every API answer through the server must equal what ``lambda_handler``
answers for the same API Gateway event; the events here are written by hand,
independently of the server's own event builder, so a mistake in it shows.
"""

from __future__ import annotations

import base64
import http.client
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qsl, unquote

import pytest

from localserver import LocalServer

ROOT = Path(__file__).resolve().parent.parent
# Headers the server adds per connection or per request, never the handler's.
TRANSPORT_HEADERS = {"date", "content-length", "connection", "x-amzn-requestid"}


@pytest.fixture(scope="module")
def lambda_handler(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """handler.lambda_handler in this process, on the same model file."""
    saved = {k: os.environ.get(k) for k in ("MODEL_URI", "MODEL_CACHE_DIR")}
    # handler.py reads its settings once, at import.
    os.environ["MODEL_URI"] = str(model_path)
    os.environ["MODEL_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    handler = importlib.import_module("handler")
    previous = handler.app
    # Other tests may have imported handler already, with another MODEL_URI:
    # the App that an import with this environment would have built.
    handler.app = type(previous)()
    try:
        assert handler.app.settings.model_uri == str(model_path)
        yield handler.lambda_handler
    finally:
        handler.app = previous
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def rest_event(method: str, target: str, headers: dict[str, str], body: bytes | None) -> dict[str, Any]:
    """An API Gateway REST proxy event as AWS documents it (written independently of rlambda.local)."""
    path, _, query = target.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    multi: dict[str, list[str]] = {}
    for k, v in pairs:
        multi.setdefault(k, []).append(v)
    if body:
        try:
            text, b64 = body.decode("utf-8"), False
        except UnicodeDecodeError:
            text, b64 = base64.b64encode(body).decode(), True
    else:
        text, b64 = None, False
    return {
        "resource": "/{proxy+}",
        "path": unquote(path),
        "httpMethod": method,
        "headers": dict(headers),
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": dict(pairs) or None,
        "multiValueQueryStringParameters": multi or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "httpMethod": method,
            "path": "/local" + unquote(path),
            "stage": "local",
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": text,
        "isBase64Encoded": b64,
    }


def comparable(status: int, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], Any]:
    """Status, handler headers (lower-cased names) and body with the per-request id removed."""
    kept = {k.lower(): v for k, v in headers.items() if k.lower() not in TRANSPORT_HEADERS}
    doc: Any = json.loads(body) if body else None
    if isinstance(doc, dict):
        doc.pop("request_id", None)
    return status, kept, doc


def via_handler(handler: Any, method: str, target: str, headers: dict[str, str], body: bytes | None) -> tuple[int, dict[str, str], Any]:
    from conftest import LambdaContext

    result = handler(rest_event(method, target, headers, body), LambdaContext())
    return comparable(result["statusCode"], result["headers"], result["body"].encode())


def via_http(server: LocalServer, method: str, target: str, headers: dict[str, str], body: bytes | None) -> tuple[int, dict[str, str], Any, http.client.HTTPResponse, bytes]:
    conn = server.connection()
    # skip_host: the Host header (if any) is part of the case's headers.
    conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
    for k, v in headers.items():
        conn.putheader(k, v)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return (*comparable(resp.status, dict(resp.getheaders()), data), resp, data)


JSON = {"Host": "localhost", "Content-Type": "application/json"}
CASES = [
    # (id, method, target, headers, body, expected status)
    ("post-single", "POST", "/predict", JSON, b'{"gre": 800, "gpa": 4, "rank": 1}', 200),
    ("post-strings", "POST", "/predict", JSON, b'{"gre": "520", "gpa": "2.9", "rank": "4"}', 200),
    ("post-batch", "POST", "/predict", JSON,
     b'{"instances": [{"gre": 800, "gpa": 4, "rank": 1}, {"gre": 300, "gpa": 2.5, "rank": 4}, {"gre": 640, "gpa": 3.3, "rank": "2"}]}', 200),
    ("post-bad-field", "POST", "/predict", JSON, b'{"gre": "abc", "gpa": 4, "rank": 1}', 400),
    ("post-bad-batch-row", "POST", "/predict", JSON,
     b'{"instances": [{"gre": 800, "gpa": 4, "rank": 1}, {"gre": 700, "gpa": null, "rank": 9}]}', 400),
    ("post-not-json", "POST", "/predict", JSON, b'{"gre": 800,', 400),
    ("post-empty", "POST", "/predict", JSON, b"", 400),
    ("post-not-utf8", "POST", "/predict", JSON, b'{"gre": "\xff\xfe", "gpa": 4, "rank": 1}', 400),
    ("post-text-plain", "POST", "/predict", {"Host": "localhost", "Content-Type": "text/plain"},
     b'{"gre": 800, "gpa": 4, "rank": 1}', 200),
    ("post-curl-default-type", "POST", "/predict", {"Host": "localhost", "Content-Type": "application/x-www-form-urlencoded"},
     b'{"gre": 800, "gpa": 4, "rank": 1}', 200),
    ("post-no-type", "POST", "/predict", {"Host": "localhost"}, b'{"gre": 800, "gpa": 4, "rank": 1}', 200),
    ("post-form-not-json", "POST", "/predict", {"Host": "localhost", "Content-Type": "application/x-www-form-urlencoded"},
     b"gre=800&gpa=4&rank=1", 400),
    ("post-xml", "POST", "/predict", {"Host": "localhost", "Content-Type": "application/xml"}, b"<gre>800</gre>", 415),
    ("post-multipart", "POST", "/predict", {"Host": "localhost", "Content-Type": "multipart/form-data; boundary=x"},
     b"--x--", 415),
    ("post-query-repeated-ignored", "POST", "/predict?utm=a&utm=b&gre=1&gre=2", JSON, b'{"gre": 800, "gpa": 4, "rank": 1}', 200),
    ("get-query-repeated-unrelated", "GET", "/predict?gre=800&gpa=4&rank=1&utm=a&utm=b", {"Host": "localhost"}, None, 200),
    ("rest-path-keeps-stage", "GET", "/local/ping", {"Host": "localhost"}, None, 404),
    ("get-query", "GET", "/predict?gre=800&gpa=4&rank=1", {"Host": "localhost"}, None, 200),
    ("get-query-encoded", "GET", "/predict?gre=%36%34%30&gpa=3.3&rank=%32", {"Host": "localhost"}, None, 200),
    ("get-query-repeated", "GET", "/predict?gre=800&gre=700&gpa=4&rank=1", {"Host": "localhost"}, None, 400),
    ("get-query-missing", "GET", "/predict?gre=800", {"Host": "localhost"}, None, 400),
    ("ping", "GET", "/ping", {"Host": "localhost"}, None, 200),
    ("metadata", "GET", "/metadata", {"Host": "localhost"}, None, 200),
    ("preflight", "OPTIONS", "/predict",
     {"Host": "localhost", "Origin": "https://example.org", "Access-Control-Request-Method": "POST",
      "Access-Control-Request-Headers": "content-type,x-api-key"}, None, 204),
    ("delete-405", "DELETE", "/predict", {"Host": "localhost"}, None, 405),
    ("post-ping-405", "POST", "/ping", JSON, b"{}", 405),
    ("unknown-404", "GET", "/nope", {"Host": "localhost"}, None, 404),
    ("outside-web-404", "GET", "/../handler.py", {"Host": "localhost"}, None, 404),
]


@pytest.mark.parametrize("name,method,target,headers,body,status", CASES, ids=[c[0] for c in CASES])
def test_route_matches_lambda_handler(server: LocalServer, lambda_handler: Any, name: str, method: str,
                                      target: str, headers: dict[str, str], body: bytes | None, status: int) -> None:
    got_status, got_headers, got_body, resp, raw = via_http(server, method, target, headers, body)
    assert got_status == status, raw
    assert (got_status, got_headers, got_body) == via_handler(lambda_handler, method, target, headers, body)
    assert got_headers["access-control-allow-origin"] == "*"
    request_id = resp.getheader("x-amzn-RequestId")
    if status >= 400:
        # The handler saw the server's Lambda context: its request id is the one returned.
        assert json.loads(raw)["request_id"] == request_id
    if status == 204:
        assert raw == b"" and resp.getheader("Content-Length") is None
    else:
        assert int(resp.getheader("Content-Length")) == len(raw)


def test_api_answers_carry_model_values(server: LocalServer) -> None:
    """Not only equal to the handler: the answers are the model's (probability in (0, 1), kinds, fields)."""
    _, _, single, _, _ = via_http(server, "POST", "/predict", JSON, b'{"gre": 800, "gpa": 4, "rank": 1}')
    assert single["result"] is True and 0.5 < single["probability"] < 1
    _, _, low, _, _ = via_http(server, "POST", "/predict", JSON, b'{"gre": 300, "gpa": 2.5, "rank": 4}')
    assert low["result"] is False and 0 < low["probability"] < 0.5
    _, _, bad, _, _ = via_http(server, "POST", "/predict", JSON,
                               b'{"instances": [{"gre": 800, "gpa": 4, "rank": 1}, {"gre": 700, "gpa": null, "rank": 9}]}')
    fields = {e["field"] for e in bad["errors"]}
    assert {"instances[1].gpa", "instances[1].rank"} <= fields
    _, _, meta, _, _ = via_http(server, "GET", "/metadata", {"Host": "localhost"}, None)
    assert meta["kind"] == "binary"
    assert {"name": "rank", "type": "factor", "levels": ["1", "2", "3", "4"]} in meta["predictors"]


def test_page_files_are_served_by_the_server(server: LocalServer) -> None:
    conn = server.connection()
    for target, ctype, needle in (
        ("/", "text/html", b'id="predict-form"'),
        ("/index.html", "text/html", b'id="predict-form"'),
        ("/app.js", "text/javascript", b"/metadata"),
        ("/style.css", "text/css", b"#chart"),
        ("/config.json", "application/json", b"apiBase"),
    ):
        conn.request("GET", target)
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status == 200, target
        assert resp.getheader("Content-Type").startswith(ctype), target
        assert needle in data, target
        # Page files are not API answers: no CORS, no Lambda request id.
        assert resp.getheader("x-amzn-RequestId") is None
    conn.request("GET", "/config.json")
    config = json.loads(conn.getresponse().read())
    assert config == {"apiBase": "", "apiKey": ""}
    conn.request("HEAD", "/")
    head = conn.getresponse()
    assert head.status == 200 and head.read() == b""
    assert int(head.getheader("Content-Length")) == len((ROOT / "web" / "index.html").read_bytes())
    # Dot-dot, raw or percent-encoded, never leaves web/: the handler's 404.
    for target in ("/%2e%2e/handler.py", "/..%2fhandler.py", "/web/../../handler.py"):
        conn.request("GET", target)
        resp = conn.getresponse()
        assert resp.status == 404 and json.loads(resp.read())["errorType"] == "NotFound", target
    conn.close()


def raw_exchange(server: LocalServer, payload: bytes, until_close: bool = True) -> bytes:
    """Send raw bytes; read until the server closes the connection."""
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_keep_alive_pipelining_and_http10(server: LocalServer) -> None:
    body = b'{"gre": 800, "gpa": 4, "rank": 1}'
    post = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    last = b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw_exchange(server, post + post + last)
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert out.index(b'"probability"') < out.index(b'"status":"ok"')
    # HTTP/1.0 without keep-alive: one answer, then the server closes.
    out = raw_exchange(server, b"GET /ping HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in out.lower()


def test_chunked_body_and_expect_continue(server: LocalServer) -> None:
    body = b'{"gre": 800, "gpa": 4, "rank": 1}'
    chunked = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               + b"%x\r\n%s\r\n" % (10, body[:10]) + b"%x\r\n%s\r\n" % (len(body) - 10, body[10:]) + b"0\r\n\r\n")
    out = raw_exchange(server, chunked)
    assert out.startswith(b"HTTP/1.1 200 OK") and b'"result":true' in out
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        interim = sock.recv(1024)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        rest = b""
        while data := sock.recv(65536):
            rest += data
    assert rest.startswith(b"HTTP/1.1 200 OK") and b'"result":true' in rest


@pytest.mark.parametrize("payload,status", [
    (b"NONSENSE\r\n\r\n", 400),
    (b"GET /ping HTTP/1.1\r\nContent-Length: twelve\r\n\r\n", 400),
    (b"POST /predict HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", 413),
    (b"GET /ping HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
])
def test_unreadable_requests_get_a_status_not_a_hang(server: LocalServer, payload: bytes, status: int) -> None:
    out = raw_exchange(server, payload)
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:100]
    # ... and the server keeps serving.
    conn = server.connection()
    conn.request("GET", "/ping")
    assert conn.getresponse().status == 200
    conn.close()


def test_fifty_concurrent_clients_get_right_answers(server: LocalServer, lambda_handler: Any) -> None:
    requests = []
    for i in range(12):
        row = {"gre": 200 + 50 * i, "gpa": 2.0 + 0.15 * i, "rank": 1 + i % 4}
        requests.append(("POST", "/predict", JSON, json.dumps(row).encode()))
        requests.append(("GET", f"/predict?gre={row['gre']}&gpa={row['gpa']}&rank={row['rank']}", {"Host": "x"}, None))
    batch = {"instances": [{"gre": 300 + 10 * i, "gpa": 3.1, "rank": 1 + i % 4} for i in range(40)]}
    requests.append(("POST", "/predict", JSON, json.dumps(batch).encode()))
    requests.append(("POST", "/predict", JSON, b'{"gre": "x", "gpa": 3, "rank": 1}'))
    expected = [via_handler(lambda_handler, *r) for r in requests]
    counts = [0] * 50
    failures: list[str] = []
    deadline = time.monotonic() + 3.0  # bounds the run; nothing is asserted about speed

    def client(n: int) -> None:
        conn = server.connection()
        i = n
        try:
            while time.monotonic() < deadline and not failures:
                method, target, headers, body = requests[i % len(requests)]
                conn.request(method, target, body=body, headers=headers)
                resp = conn.getresponse()
                got = comparable(resp.status, dict(resp.getheaders()), resp.read())
                if got != expected[i % len(requests)]:
                    failures.append(f"client {n}: {method} {target} -> {got}")
                counts[n] += 1
                i += 1
        except Exception as exc:  # any transport error is a failure of the test
            failures.append(f"client {n}: {type(exc).__name__}: {exc}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures, failures[:5]
    assert all(c > 0 for c in counts), counts


def test_access_log_has_method_path_status_latency(server: LocalServer) -> None:
    conn = server.connection()
    conn.request("GET", "/predict?gre=610&gpa=3.1&rank=2")
    conn.getresponse().read()
    conn.close()
    # The log line is written before the answer's bytes leave, so it is there by now.
    import re

    assert re.search(r'127\.0\.0\.1 "GET /predict\?gre=610&gpa=3\.1&rank=2" 200 \d+\.\d\dms', server.log())


def test_port_in_use_is_one_line_and_exit_2(server: LocalServer) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rlambda.local", "--host", "127.0.0.1", "--port", str(server.port)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "already in use" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("workers", [1, 2])
def test_sigint_stops_cleanly(model_path: Path, tmp_path: Path, workers: int) -> None:
    srv = LocalServer(model_path, tmp_path, "--workers", str(workers))
    try:
        for _ in range(workers - 1):
            assert "(version " in srv.line()
        # An idle keep-alive connection must not keep the server from stopping.
        idle = srv.connection()
        idle.request("GET", "/ping")
        assert idle.getresponse().read()
    finally:
        code = srv.stop()
    assert code == 0
    rest = []
    while (line := srv.line()) != "<eof>":
        rest.append(line)
    assert rest[-1:] == ["rlambda.local: stopped"]
    assert "Traceback" not in srv.log()
    idle.close()


def test_model_missing_is_503_from_the_handler(tmp_path: Path) -> None:
    """A server whose model cannot be loaded still starts and answers like the deployed function."""
    missing = tmp_path / "nope.rds"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlambda.local", "--host", "127.0.0.1", "--port", "0", "--quiet"],
        cwd=ROOT, env={**os.environ, "MODEL_URI": str(missing), "MODEL_CACHE_DIR": str(tmp_path)},
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split("http://", 1)[1].strip().rstrip("/").split("/")[0]
        status_line = proc.stdout.readline()
        assert "not loaded" in status_line, status_line
        host, port = url.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("GET", "/ping")
        resp = conn.getresponse()
        doc = json.loads(resp.read())
        assert resp.status >= 500 and doc["httpStatus"] == resp.status and doc["errorType"]
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def test_model_from_an_s3_compatible_endpoint(model_path: Path, tmp_path: Path, server: LocalServer) -> None:
    """MODEL_URI=s3://... with AWS_ENDPOINT_URL: any S3-compatible store (here moto's server)."""
    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s3_port = s.getsockname()[1]
    moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{s3_port}"
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
             "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}
    srv = None
    try:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        for _ in range(300):  # moto's server takes a moment to listen (bounded)
            try:
                client.create_bucket(Bucket="models")
                break
            except Exception:
                time.sleep(0.1)
        client.upload_file(str(model_path), "models", "admission.rds")
        srv = LocalServer("s3://models/admission.rds", tmp_path, env=creds)
        body = b'{"gre": 640, "gpa": 3.3, "rank": 3}'
        _, _, from_s3, _, _ = via_http(srv, "POST", "/predict", JSON, body)
        _, _, from_file, _, _ = via_http(server, "POST", "/predict", JSON, body)
        assert from_s3["model"]["uri"] == "s3://models/admission.rds"
        assert from_s3["probability"] == from_file["probability"]
        assert from_s3["model"]["sha256"] == from_file["model"]["sha256"]
    finally:
        if srv is not None:
            srv.stop()
        moto.terminate()
        moto.wait(timeout=30)


def test_base_path_through_the_server(model_path: Path, tmp_path: Path) -> None:
    # GIVEN make serve with BASE_PATH=/v1 (as behind a custom domain's mapping)
    srv = LocalServer(model_path, tmp_path, "--quiet", env={"BASE_PATH": "/v1"})
    try:
        # THEN the API answers under /v1, and the page's files are still at the root
        assert srv.api("GET", "/v1/ping")[0] == 200
        status, doc = srv.api("POST", "/v1/predict", {"gre": 800, "gpa": 4, "rank": 1})
        assert status == 200 and doc["result"] is True
        assert srv.api("GET", "/v2/ping")[0] == 404
    finally:
        srv.stop()


@pytest.mark.parametrize("args,env,says", [
    (["--port", "99999"], {}, "between 0 and 65535"),
    ([], {"PORT": "abc"}, "not a port number"),
    (["--host", "no.such.host.invalid", "--port", "0"], {}, "cannot be used"),
])
def test_bad_address_is_a_message_not_a_traceback(args: list[str], env: dict[str, str], says: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "rlambda.local", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})
    assert proc.returncode == 2
    assert says in proc.stderr and "Traceback" not in proc.stderr
