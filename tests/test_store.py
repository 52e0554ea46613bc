"""The model comes from S3 once per container, atomically, and failures are clear 5xx."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from rlambda.app import App
from rlambda.errors import HTTPError, ModelUnavailable
from rlambda.settings import Settings
from rlambda.store import Location, Store

BUCKET = "serverless-poc-models"


def count_calls(client, operation: str) -> list[str]:
    calls: list[str] = []
    client.meta.events.register(f"before-call.s3.{operation}", lambda **kw: calls.append(operation))
    return calls


@pytest.fixture
def bucket(s3, model_path):
    s3.create_bucket(Bucket=BUCKET)
    s3.upload_file(str(model_path), BUCKET, "admission.rds")
    return s3


def app_for(s3, cache: Path, uri: str = f"s3://{BUCKET}/admission.rds") -> App:
    settings = Settings(model_uri=uri, cache_dir=str(cache))
    return App(settings, Store(str(cache), s3_client=s3))


def cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*") if p.is_file())


def test_first_call_downloads_later_calls_do_not(bucket, tmp_path, context):
    # GIVEN a model in S3 and an empty /tmp
    gets = count_calls(bucket, "GetObject")
    app = app_for(bucket, tmp_path)
    # WHEN the function is invoked three times
    answers = [app.handle({"gre": 800, "gpa": 4, "rank": r}, context) for r in (1, 2, 4)]
    # THEN S3 was read once, and the answer names the object
    assert gets == ["GetObject"]
    model = answers[0]["model"]
    assert model["uri"] == f"s3://{BUCKET}/admission.rds" and model["etag"]
    assert cache_files(tmp_path) == ["admission.rds", "admission.rds.json"]


def test_new_process_reuses_the_cached_file_without_s3(bucket, tmp_path, context):
    app_for(bucket, tmp_path).handle({"gre": 800, "gpa": 4, "rank": 1}, context)
    gets = count_calls(bucket, "GetObject")
    again = app_for(bucket, tmp_path).handle({"gre": 800, "gpa": 4, "rank": 1}, context)
    assert gets == [] and again["result"] is True


def test_tampered_cache_is_downloaded_again(bucket, tmp_path, context):
    app_for(bucket, tmp_path).handle({"gre": 800, "gpa": 4, "rank": 1}, context)
    cached = next(tmp_path.rglob("admission.rds"))
    cached.write_bytes(b"not the model")
    gets = count_calls(bucket, "GetObject")
    assert app_for(bucket, tmp_path).handle({"gre": 800, "gpa": 4, "rank": 1}, context)["result"] is True
    assert gets == ["GetObject"]


def test_missing_object_is_503_with_retry_after_then_recovers(s3, model_path, tmp_path, event, context):
    s3.create_bucket(Bucket=BUCKET)
    app = app_for(s3, tmp_path)
    answer = app.handle(event("apigw_rest_get_predict.json"), context)
    assert answer["statusCode"] == 503
    body = json.loads(answer["body"])
    assert "does not exist" in body["message"] and "Traceback" not in answer["body"]
    assert answer["headers"]["Retry-After"]
    assert cache_files(tmp_path) == []
    # once the model is uploaded, the same process serves it
    s3.upload_file(str(model_path), BUCKET, "admission.rds")
    assert app.handle(event("apigw_rest_get_predict.json"), context)["statusCode"] == 200


def test_missing_bucket_and_access_denied(s3, tmp_path, context):
    with pytest.raises(HTTPError) as caught:
        app_for(s3, tmp_path, "s3://no-such-bucket/admission.rds").handle({"gre": 1, "gpa": 1, "rank": 1}, context)
    assert json.loads(str(caught.value))["httpStatus"] == 503

    class Denied:
        def get_object(self, **kw):
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "GetObject")

    app = App(Settings(model_uri=f"s3://{BUCKET}/admission.rds", cache_dir=str(tmp_path)), Store(str(tmp_path), Denied()))
    with pytest.raises(HTTPError) as caught:
        app.handle({"gre": 1, "gpa": 1, "rank": 1}, context)
    err = json.loads(str(caught.value))
    assert err["httpStatus"] == 500 and "s3:GetObject" in err["message"]


def test_cut_download_leaves_nothing_behind(model_path, tmp_path):
    data = model_path.read_bytes()

    class Cut:
        def get_object(self, **kw):
            return {"ContentLength": len(data), "ETag": '"x"', "Body": io.BytesIO(data[: len(data) // 2])}

    store = Store(str(tmp_path), Cut())
    with pytest.raises(ModelUnavailable, match="cut short"):
        store.fetch(f"s3://{BUCKET}/admission.rds")
    assert cache_files(tmp_path) == []


def test_corrupt_model_is_500_without_traceback(s3, tmp_path, event, context):
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="admission.rds", Body=b"this is not an rds file")
    answer = app_for(s3, tmp_path).handle(event("apigw_http_get_ping_default_stage.json"), context)
    assert answer["statusCode"] == 500
    assert "cannot be served" in json.loads(answer["body"])["message"]


def test_local_file_missing_is_503(tmp_path, context):
    app = App(Settings(model_uri=str(tmp_path / "nope.rds"), cache_dir=str(tmp_path)))
    with pytest.raises(HTTPError) as caught:
        app.handle({"gre": 1, "gpa": 1, "rank": 1}, context)
    assert "does not exist" in json.loads(str(caught.value))["message"]


@pytest.mark.parametrize(
    "uri,expected",
    [
        ("s3://b/k/admission.rds", ("s3", "b", "k/admission.rds")),
        ("file:///opt/m.rds", ("file", "", "/opt/m.rds")),
        ("/opt/m.rds", ("file", "", "/opt/m.rds")),
    ],
)
def test_uri_forms(uri, expected):
    loc = Location.parse(uri)
    assert (loc.scheme, loc.bucket, loc.key) == expected


@pytest.mark.parametrize("uri", ["s3://bucket-only", "s3:///key", "http://x/y.rds", "file://host/x.rds"])
def test_bad_uris(uri):
    with pytest.raises(ValueError):
        Location.parse(uri)
