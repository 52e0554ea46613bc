"""Property-based fuzzing of event and body parsing: nothing makes the handler fail with a 5xx.

For HTTP-shaped events (REST 1.0, HTTP API 2.0) the property is: always a
well-formed answer (int status, string headers, a strict-JSON body) whose
status is 2xx or 4xx. For direct invocations: a result, or an
rlambda.errors.HTTPError with a status below 500. R and the real model are
used throughout, so a value that slips past validation reaches R.

FUZZ_EXAMPLES (default 150) scales the number of examples per property;
scripts/reliability.py raises it.
"""

from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import LambdaContext

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
FIELDS = ("gre", "gpa", "rank")
ROUTES = ("/predict", "/ping", "/metadata", "/", "/predict/", "/nope", "/local/predict", "")
METHODS = ("GET", "POST", "OPTIONS", "DELETE", "PUT", "HEAD", "PATCH", "get", "")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Values aimed at the validators: numbers as text, near-levels, specials.
field_values = st.one_of(
    json_values,
    st.from_regex(r"\A\s?[+-]?\d{0,4}(\.\d{0,3})?([eE][+-]?\d{1,4})?\s?\Z"),
    st.sampled_from(["1", "2", "3", "4", " 4 ", "1.0", "NaN", "inf", "-0", "1e308", "1e309", "0x10", "", "true"]),
    st.sampled_from([1, 2, 3, 4, 0, 5, -0.0, 1.0, 4.0, 1e308, -1e308, 2**31, 2**63, float("nan")]),
)
rows = st.dictionaries(st.sampled_from(FIELDS + ("admit", "instances", "")), field_values, max_size=5)
documents = st.one_of(
    json_values,
    rows,
    st.builds(lambda r: {"instances": r}, st.lists(st.one_of(rows, json_values), max_size=8)),
    st.builds(lambda v: {"instances": v}, json_values),
)


def body_texts() -> st.SearchStrategy[str]:
    """Bodies: JSON documents (NaN tokens included), raw text, truncated JSON."""
    encoded = documents.map(lambda d: json.dumps(d))
    return st.one_of(
        encoded,
        encoded.flatmap(lambda s: st.integers(0, len(s)).map(lambda n: s[:n])),
        st.text(max_size=60),
    )


headers = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(["Content-Type", "content-type", "Origin", "X-Api-Key", "Host", ""]),
        st.one_of(st.sampled_from(["application/json", "text/plain", "application/vnd.x+json", "", "*/*;q=1"]), st.text(max_size=10)),
        max_size=4,
    ),
    json_values,
)


@st.composite
def rest_events(draw: st.DrawFn) -> dict[str, Any]:
    """API Gateway REST (1.0) events: well-formed and otherwise."""
    body: Any = draw(st.one_of(st.none(), body_texts(), json_values))
    b64 = draw(st.one_of(st.booleans(), json_values))
    if b64 is True and isinstance(body, str) and draw(st.booleans()):
        body = base64.b64encode(body.encode("utf-8", "surrogatepass")).decode()
    query = st.dictionaries(st.sampled_from(FIELDS + ("x",)), st.text(max_size=8), max_size=4)
    return {
        "httpMethod": draw(st.one_of(st.sampled_from(METHODS), json_values)),
        "path": draw(st.one_of(st.sampled_from(ROUTES), st.text(max_size=20), json_values)),
        "requestContext": draw(st.one_of(st.fixed_dictionaries({"stage": st.sampled_from(["prod", "local", "$default"])}), json_values)),
        "headers": draw(headers),
        "queryStringParameters": draw(st.one_of(st.none(), query, json_values)),
        "multiValueQueryStringParameters": draw(
            st.one_of(st.none(), st.dictionaries(st.sampled_from(FIELDS), st.lists(st.text(max_size=6), max_size=3)), json_values)
        ),
        "body": body,
        "isBase64Encoded": b64,
    }


@st.composite
def http_api_events(draw: st.DrawFn) -> dict[str, Any]:
    """HTTP API / function URL (2.0) events."""
    return {
        "version": "2.0",
        "rawPath": draw(st.one_of(st.sampled_from(ROUTES), st.text(max_size=20), json_values)),
        "rawQueryString": draw(st.one_of(st.none(), st.text(max_size=40), json_values)),
        "requestContext": {
            "http": draw(st.one_of(st.fixed_dictionaries({"method": st.sampled_from(METHODS)}), json_values)),
            "stage": draw(st.one_of(st.just("$default"), st.text(max_size=5), json_values)),
            "domainName": draw(st.one_of(st.just("abc.lambda-url.us-east-1.on.aws"), st.text(max_size=5), json_values)),
        },
        "headers": draw(headers),
        "body": draw(st.one_of(st.none(), body_texts(), json_values)),
        "isBase64Encoded": draw(st.booleans()),
    }


@pytest.fixture(scope="module")
def app(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Small limits, so the fuzzer reaches the row and byte limits too."""
    from rlambda.app import App
    from rlambda.settings import Settings

    cache = tmp_path_factory.mktemp("fuzz-cache")
    built = App(Settings(model_uri=str(model_path), cache_dir=str(cache), max_rows=5, max_body_bytes=400))
    built.model()  # load once, outside the examples
    return built


def assert_well_formed(answer: Any) -> None:
    """A proxy answer API Gateway accepts, with a 2xx or 4xx status and strict JSON."""
    assert isinstance(answer, dict)
    status = answer["statusCode"]
    assert type(status) is int and (200 <= status < 300 or 400 <= status < 500), answer
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in answer["headers"].items())
    assert isinstance(answer["body"], str) and answer["isBase64Encoded"] is False
    if answer["body"]:
        doc = json.loads(answer["body"], parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
        if status >= 400:
            assert doc["httpStatus"] == status and doc["message"] and doc["errorType"]
        elif "probability" in doc:
            assert math.isfinite(doc["probability"])
    else:
        assert status == 204


@FUZZ
@given(event=rest_events())
def test_rest_events_never_5xx(app: Any, event: dict[str, Any]) -> None:
    assert_well_formed(app.handle(event, LambdaContext()))


@FUZZ
@given(event=http_api_events())
def test_http_api_events_never_5xx(app: Any, event: dict[str, Any]) -> None:
    assert_well_formed(app.handle(event, LambdaContext()))


@FUZZ
@given(body=st.one_of(st.binary(max_size=200), body_texts().map(lambda s: s.encode("utf-8", "surrogatepass"))), b64=st.booleans())
def test_any_body_bytes_never_5xx(app: Any, body: bytes, b64: bool) -> None:
    # GIVEN any bytes as a POST body, sent as API Gateway sends them (base64 when binary)
    text = base64.b64encode(body).decode() if b64 else body.decode("utf-8", "replace")
    event = {
        "httpMethod": "POST",
        "path": "/predict",
        "requestContext": {"stage": "prod"},
        "headers": {"Content-Type": "application/json"},
        "body": text,
        "isBase64Encoded": b64,
    }
    # THEN a well-formed 2xx/4xx
    assert_well_formed(app.handle(event, LambdaContext()))


@FUZZ
@given(payload=documents)
def test_direct_invocation_result_or_4xx(app: Any, payload: Any) -> None:
    from rlambda.errors import HTTPError

    try:
        result = app.handle(payload, LambdaContext())
    except HTTPError as exc:
        assert exc.status < 500, str(exc)
        doc = json.loads(str(exc))
        assert doc["httpStatus"] == exc.status and doc["errors"] is not None
        return
    # a result: one row or a batch, every probability finite
    predictions = result["predictions"] if "predictions" in result else [result]
    assert predictions and all(math.isfinite(p["probability"]) and isinstance(p["result"], bool) for p in predictions)


@FUZZ
@given(row=st.fixed_dictionaries({f: field_values for f in FIELDS}))
def test_every_field_value_is_scored_or_named(app: Any, row: dict[str, Any]) -> None:
    """A complete row: either scored, or a 400 that names only the model's fields."""
    from rlambda.errors import HTTPError

    try:
        result = app.handle(row, LambdaContext())
    except HTTPError as exc:
        doc = json.loads(str(exc))
        assert exc.status == 400 and doc["errors"]
        assert {e["field"] for e in doc["errors"]} <= set(FIELDS)
        return
    assert 0 <= result["probability"] <= 1
