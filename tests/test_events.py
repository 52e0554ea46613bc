"""Every event shape AWS documents reaches the same routes and answers in its own shape."""

from __future__ import annotations

import json
from typing import Any

import pytest


def body_of(answer: dict[str, Any]) -> Any:
    return json.loads(answer["body"]) if answer["body"] else None


@pytest.fixture
def app(make_app):
    return make_app()


def test_rest_get_predict_on_named_stage(app, event, context):
    # GIVEN the original API's GET with query strings, on stage "prod"
    ev = event("apigw_rest_get_predict.json")
    # WHEN it is handled
    answer = app.handle(ev, context)
    # THEN the decision and probability come back as JSON with CORS
    assert answer["statusCode"] == 200
    body = body_of(answer)
    assert body["result"] is True and 0.5 < body["probability"] < 1
    assert answer["headers"]["Access-Control-Allow-Origin"] == "*"
    assert answer["headers"]["Content-Type"] == "application/json"
    assert answer["isBase64Encoded"] is False


def test_rest_post_and_http_api_and_function_url_agree_with_direct(app, event, context):
    # GIVEN the same applicant sent through every source
    direct = app.handle(event("direct_single.json"), context)
    rest = body_of(app.handle(event("apigw_rest_post_predict.json"), context))
    http = body_of(app.handle(event("apigw_http_post_predict.json"), context))
    # THEN they all score alike (the HTTP API fixture is a batch of rank 1 and rank 4)
    assert rest == direct
    assert http["predictions"][0] == {"result": direct["result"], "probability": direct["probability"]}
    # AND the base64 function URL body (strings, rank 4) equals the batch's second row
    url = body_of(app.handle(event("function_url_post_predict_base64.json"), context))
    assert {"result": url["result"], "probability": url["probability"]} == http["predictions"][1]


def test_direct_batch_keeps_order_and_ignores_extra_fields(app, event, context):
    out = app.handle(event("direct_batch.json"), context)
    assert [p["result"] for p in out["predictions"]] == [True, False, False]
    assert set(out["model"]) == {"uri", "version", "etag", "sha256"}


def test_original_string_payload(app, event, context):
    out = app.handle(event("direct_single_strings.json"), context)
    assert out["result"] is False and 0 < out["probability"] < 0.5


def test_ping_and_metadata_on_default_stage(app, event, context):
    ping = app.handle(event("apigw_http_get_ping_default_stage.json"), context)
    assert ping["statusCode"] == 200 and body_of(ping)["status"] == "ok"
    meta = body_of(app.handle(event("apigw_http_get_metadata.json"), context))
    assert meta["kind"] == "binary" and meta["threshold"] == 0.5
    # Numeric predictors also carry their observed range (the page's what-if chart sweeps it).
    assert [p.pop("range") for p in meta["predictors"][:2]] == [[220.0, 800.0], [2.26, 4.0]]
    assert meta["predictors"] == [
        {"name": "gre", "type": "numeric"},
        {"name": "gpa", "type": "numeric"},
        {"name": "rank", "type": "factor", "levels": ["1", "2", "3", "4"]},
    ]
    assert meta["r_version"].startswith("4.") and meta["rpy2_version"] == "3.5.17"


def test_preflight_answers_with_cors(app, event, context):
    answer = app.handle(event("apigw_rest_options_predict.json"), context)
    assert answer["statusCode"] == 204
    headers = answer["headers"]
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert "X-Api-Key" in headers["Access-Control-Allow-Headers"]
    assert answer["body"] == ""


def test_cors_origins_allow_list(make_app, event, context):
    app = make_app(cors_origins=("https://example.org",))
    allowed = app.handle(event("apigw_rest_post_predict.json"), context)
    assert allowed["headers"]["Access-Control-Allow-Origin"] == "https://example.org"
    other = event("apigw_rest_post_predict.json")
    other["headers"]["Origin"] = "https://evil.example"
    denied = app.handle(other, context)
    assert "Access-Control-Allow-Origin" not in denied["headers"]
    assert denied["headers"]["Vary"] == "Origin"


@pytest.mark.parametrize(
    "method,path,status",
    [("GET", "/nope", 404), ("DELETE", "/predict", 405), ("POST", "/ping", 405), ("PUT", "/metadata", 405)],
)
def test_unknown_routes_and_methods(app, event, context, method, path, status):
    ev = event("apigw_rest_get_predict.json")
    ev["httpMethod"], ev["path"] = method, path
    answer = app.handle(ev, context)
    assert answer["statusCode"] == status
    body = body_of(answer)
    assert body["httpStatus"] == status and body["request_id"] == context.aws_request_id
    assert answer["headers"]["Access-Control-Allow-Origin"] == "*"
    if status == 405:
        assert "GET" in answer["headers"]["Allow"] or "POST" in answer["headers"]["Allow"]


def test_http_api_named_stage_is_stripped(app, event, context):
    ev = event("apigw_http_get_metadata.json")
    ev["rawPath"] = "/dev/metadata"
    ev["requestContext"]["stage"] = "dev"
    assert app.handle(ev, context)["statusCode"] == 200


def ping_status(app, ev, context) -> int:
    return app.handle(ev, context)["statusCode"]


def test_a_rest_path_keeps_its_stage_name(app, event, context):
    # GIVEN REST events on stage prod: API Gateway never puts the stage in a REST event's path
    ev = event("apigw_rest_get_predict.json")
    ev["queryStringParameters"] = ev["multiValueQueryStringParameters"] = None
    ev["path"] = "/ping"
    assert ping_status(app, ev, context) == 200
    # WHEN the path itself starts with the stage's name THEN it is a route of that name: 404
    ev["path"] = "/prod/ping"
    assert ping_status(app, ev, context) == 404


def test_an_http_api_path_loses_only_its_own_stage(app, event, context):
    # GIVEN an HTTP API (2.0) event on stage prod
    ev = event("apigw_http_get_metadata.json")
    ev["requestContext"]["stage"] = "prod"
    ev["rawPath"] = ev["requestContext"]["http"]["path"] = "/prod/ping"
    assert ping_status(app, ev, context) == 200
    # WHEN the path carries another stage's name THEN nothing is stripped: 404
    ev["rawPath"] = ev["requestContext"]["http"]["path"] = "/staging/ping"
    assert ping_status(app, ev, context) == 404
    # AND an HTTP API's payload format 1.0 is stripped like 2.0
    rest_shaped = event("apigw_rest_get_predict.json")
    rest_shaped.update(version="1.0", path="/prod/ping", queryStringParameters=None, multiValueQueryStringParameters=None)
    assert ping_status(app, rest_shaped, context) == 200


def test_base_path_of_a_custom_domain(make_app, event, context):
    # GIVEN BASE_PATH=v1 (a custom domain mapping /v1 to the API)
    app = make_app(base_paths=("v1",))
    rest = event("apigw_rest_get_predict.json")
    rest["path"] = "/v1/predict"
    http = event("apigw_http_get_metadata.json")
    http["requestContext"]["stage"] = "prod"
    http["rawPath"] = http["requestContext"]["http"]["path"] = "/prod/v1/ping"
    # THEN routes answer under the base path, for REST and HTTP APIs
    assert ping_status(app, rest, context) == 200
    assert ping_status(app, http, context) == 200
    # AND without the setting the same paths are unknown routes
    plain = make_app()
    assert ping_status(plain, rest, context) == 404 and ping_status(plain, http, context) == 404


def test_base_path_setting_is_read_from_the_environment():
    from rlambda.settings import Settings

    assert Settings.from_env({"BASE_PATH": "/v1/, api"}).base_paths == ("/v1/", "api")
    assert Settings.from_env({}).base_paths == ()
