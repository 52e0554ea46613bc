"""Bad input is answered with a 400 that names the field and says what to send."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest


@pytest.fixture(scope="module")
def app(model_path, tmp_path_factory):
    from rlambda.app import App
    from rlambda.settings import Settings

    return App(Settings(model_uri=str(model_path), cache_dir=str(tmp_path_factory.mktemp("cache")), max_rows=50))


def direct_error(app, payload: Any, context) -> dict[str, Any]:
    """The JSON error a direct invocation raises."""
    from rlambda.errors import HTTPError

    with pytest.raises(HTTPError) as caught:
        app.handle(payload, context)
    err = json.loads(str(caught.value))
    assert err["request_id"] == context.aws_request_id
    return err


def post(app, event, context, body: str | None, **extra: Any) -> dict[str, Any]:
    ev = event("apigw_rest_post_predict.json")
    ev["body"] = body
    ev.update(extra)
    return app.handle(ev, context)


@pytest.mark.parametrize(
    "payload,field,words",
    [
        ({"gpa": 4, "rank": 1}, "gre", "required"),
        ({"gre": None, "gpa": 4, "rank": 1}, "gre", "required"),
        ({"gre": "abc", "gpa": 4, "rank": 1}, "gre", "finite number"),
        ({"gre": True, "gpa": 4, "rank": 1}, "gre", "got true"),
        ({"gre": [800], "gpa": 4, "rank": 1}, "gre", "an array"),
        ({"gre": {"v": 1}, "gpa": 4, "rank": 1}, "gre", "an object"),
        ({"gre": "NaN", "gpa": 4, "rank": 1}, "gre", "finite number"),
        ({"gre": float("inf"), "gpa": 4, "rank": 1}, "gre", "finite number"),
        ({"gre": "1e999", "gpa": 4, "rank": 1}, "gre", "too large"),
        ({"gre": 10**400, "gpa": 4, "rank": 1}, "gre", "too large"),
        ({"gre": 800, "gpa": "4,0", "rank": 1}, "gpa", "finite number"),
        ({"gre": 800, "gpa": 4, "rank": 5}, "rank", "one of 1, 2, 3, 4"),
        ({"gre": 800, "gpa": 4, "rank": 1.5}, "rank", "one of 1, 2, 3, 4"),
        ({"gre": 800, "gpa": 4, "rank": "first"}, "rank", "one of 1, 2, 3, 4"),
    ],
)
def test_bad_field_names_the_field(app, context, payload, field, words):
    # GIVEN an applicant with one bad field WHEN invoked directly
    err = direct_error(app, payload, context)
    # THEN a 400 names the field and what is expected
    assert err["httpStatus"] == 400 and err["errorType"] == "BadRequest"
    assert [e["field"] for e in err["errors"]] == [field]
    assert words in err["errors"][0]["problem"]
    assert field in err["message"]


def test_every_bad_field_is_reported_at_once(app, context):
    err = direct_error(app, {"gre": "x", "gpa": None, "rank": 9}, context)
    assert [e["field"] for e in err["errors"]] == ["gre", "gpa", "rank"]


def test_batch_errors_name_the_row(app, context):
    rows = [{"gre": 800, "gpa": 4, "rank": 1}, {"gre": 800, "gpa": "x", "rank": 1}, "not a row"]
    err = direct_error(app, {"instances": rows}, context)
    assert err["errors"] == [{"field": "instances[2]", "problem": "must be a JSON object of fields, got 'not a row'"}]
    err = direct_error(app, {"instances": rows[:2]}, context)
    assert err["errors"][0]["field"] == "instances[1].gpa"


@pytest.mark.parametrize(
    "payload,words",
    [
        ({"instances": []}, "empty"),
        ({"instances": {"gre": 1}}, "array"),
        ({"instances": [{"gre": 800, "gpa": 4, "rank": 1}] * 51}, "more than the 50"),
        ([1, 2, 3], "JSON object"),
        ("gre=800", "JSON object"),
    ],
)
def test_bad_documents(app, context, payload, words):
    err = direct_error(app, payload, context)
    assert err["httpStatus"] == 400 and words in err["message"]


@pytest.mark.parametrize(
    "body,words",
    [
        (None, "empty"),
        ("", "empty"),
        ("   ", "empty"),
        ('{"gre": 800, "gpa": 4, "rank": ', "not valid JSON"),
        ("gre=800&gpa=4", "not valid JSON"),
        ('{"gre": NaN, "gpa": 4, "rank": 1}', "NaN"),
        ('{"gre": Infinity, "gpa": 4, "rank": 1}', "Infinity"),
        ('{"gre": 800, "gre": 700, "gpa": 4, "rank": 1}', "more than once"),
    ],
)
def test_bad_bodies_over_http(app, event, context, body, words):
    answer = post(app, event, context, body)
    assert answer["statusCode"] == 400
    err = json.loads(answer["body"])
    assert words in err["message"]
    assert answer["headers"]["Access-Control-Allow-Origin"] == "*"


def test_base64_garbage_and_non_utf8(app, event, context):
    garbage = post(app, event, context, "%%%not base64%%%", isBase64Encoded=True)
    assert garbage["statusCode"] == 400 and "base64" in json.loads(garbage["body"])["message"]
    latin1 = base64.b64encode('{"gre": "\xe9"}'.encode("latin-1")).decode()
    answer = post(app, event, context, latin1, isBase64Encoded=True)
    assert answer["statusCode"] == 400 and "UTF-8" in json.loads(answer["body"])["message"]


@pytest.mark.parametrize("ctype", ["multipart/form-data; boundary=x", "application/xml", "text/csv",
                                   "application/json, application/xml"])
def test_a_type_that_is_not_json_is_415(app, event, context, ctype):
    ev = event("apigw_rest_post_predict.json")
    ev["headers"]["Content-Type"] = ctype
    answer = app.handle(ev, context)
    assert answer["statusCode"] == 415
    assert "application/json" in json.loads(answer["body"])["message"]
    assert answer["headers"]["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("ctype", [None, "application/json", "application/json; charset=utf-8", "text/plain",
                                   "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                                   "application/vnd.api+json"])
def test_json_under_a_default_type_is_scored(app, event, context, ctype):
    # GIVEN a JSON body sent as curl -d (form-urlencoded) or a page avoiding a preflight (text/plain) would
    ev = event("apigw_rest_post_predict.json")
    expected = json.loads(app.handle(ev, context)["body"])
    ev["headers"].pop("Content-Type", None)
    if ctype is not None:
        ev["headers"]["Content-Type"] = ctype
    # THEN it is scored like application/json
    answer = app.handle(ev, context)
    assert answer["statusCode"] == 200 and json.loads(answer["body"]) == expected


def test_http_api_comma_joined_content_types(app, event, context):
    # GIVEN an HTTP API 2.0 event whose repeated Content-Type headers arrive joined by a comma
    ev = event("apigw_http_post_predict.json")
    expected = app.handle(ev, context)["body"]
    ev["headers"]["content-type"] = "application/json,application/json"
    assert app.handle(ev, context)["body"] == expected
    ev["headers"]["content-type"] = "application/json,multipart/form-data"
    assert app.handle(ev, context)["statusCode"] == 415


def test_duplicated_query_parameter(app, event, context):
    ev = event("apigw_rest_get_predict.json")
    ev["multiValueQueryStringParameters"]["gre"] = ["800", "300"]
    answer = app.handle(ev, context)
    assert answer["statusCode"] == 400 and "gre" in json.loads(answer["body"])["message"]


def test_a_repeated_parameter_that_is_no_field_is_ignored(app, event, context):
    # GIVEN a GET whose tracking parameter repeats (REST multiValueQueryStringParameters and HTTP API rawQueryString)
    ev = event("apigw_rest_get_predict.json")
    expected = json.loads(app.handle(ev, context)["body"])
    ev["multiValueQueryStringParameters"]["utm"] = ["a", "b"]
    ev["queryStringParameters"]["utm"] = "b"
    # THEN it is scored as without it
    answer = app.handle(ev, context)
    assert answer["statusCode"] == 200 and json.loads(answer["body"]) == expected
    http = event("apigw_http_get_metadata.json")
    http["rawPath"] = http["requestContext"]["http"]["path"] = "/predict"
    http["rawQueryString"] = "gre=800&gpa=4&rank=1&utm=a&utm=b"
    assert json.loads(app.handle(http, context)["body"])["probability"] == expected["probability"]
    http["rawQueryString"] = "gre=800&gpa=4&rank=1&rank=2"
    assert app.handle(http, context)["statusCode"] == 400


def test_a_post_ignores_its_query_string(app, event, context):
    # GIVEN a POST whose URL repeats parameters, even the model's own: the body is the input
    ev = event("apigw_rest_post_predict.json")
    expected = json.loads(app.handle(ev, context)["body"])
    ev["queryStringParameters"] = {"utm": "b", "gre": "300"}
    ev["multiValueQueryStringParameters"] = {"utm": ["a", "b"], "gre": ["200", "300"]}
    answer = app.handle(ev, context)
    assert answer["statusCode"] == 200 and json.loads(answer["body"]) == expected


def test_next_valid_request_after_errors_is_right(app, event, context):
    expected = app.handle({"gre": 800, "gpa": 4, "rank": 1}, context)
    for bad in ({"gre": "x"}, {"instances": "no"}, [None]):
        direct_error(app, bad, context)
    assert app.handle({"gre": 800, "gpa": 4, "rank": 1}, context) == expected
