"""Big files: the batch function in a Step Functions Distributed Map (event shapes from tests/events/)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from rlambda.app import App
from rlambda.settings import Settings

BUCKET = "serverless-poc-models"


@pytest.fixture
def app(model_path, tmp_path) -> App:
    return App(Settings(model_uri=str(model_path), cache_dir=str(tmp_path / "cache")))


@pytest.fixture
def handler_with(app, monkeypatch):
    import handler

    monkeypatch.setattr(handler, "app", app)
    return handler


def rows(s3, key: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode())))


def test_a_map_batch_writes_its_part_naming_the_files_rows(s3, handler_with, event, context):
    s3.create_bucket(Bucket=BUCKET)
    out = handler_with.batch_handler(event("sfn_map_batch.json"), context)
    assert (out["status"], out["rows"], out["scored"], out["failed"], out["first_row"]) == ("scored", 4, 2, 2, 4001)
    part = rows(s3, "outputs/big/part-0000004001.csv")
    assert part[0] == ["id", "gre", "gpa", "rank", "result", "probability", "model_version"]
    assert [r[0] for r in part[1:]] == ["a4000", "a4001"]
    errors = rows(s3, "outputs/big/part-0000004001.errors.csv")
    assert [(e[0], e[1], e[2]) for e in errors[1:]] == [
        ("4003", "gre must be a finite number, got 'abc'", "'=HYPERLINK(\"http://x\")"),
        ("4004", "rank must be one of 1, 2, 3, 4, got '9'", "a4003")]


def test_a_map_batch_for_another_model_version_is_refused(s3, handler_with, event, context):
    from rlambda.batch import Refused

    s3.create_bucket(Bucket=BUCKET)
    ev = event("sfn_map_batch.json")
    ev["BatchInput"]["model_version"] = "v-not-served"
    with pytest.raises(Refused, match="planned for model version v-not-served"):
        handler_with.batch_handler(ev, context)


def test_a_misshapen_batch_is_a_bad_request(handler_with, context):
    from rlambda.errors import BadRequest

    with pytest.raises(BadRequest, match="BatchInput.key is required"):
        handler_with.batch_handler({"Items": [], "BatchInput": {"bucket": BUCKET}}, context)


def test_plan_names_the_served_version_and_pins_the_csvs_version(s3, handler_with, context):
    out = handler_with.batch_handler({"Plan": {"bucket": BUCKET, "key": "inputs/big.csv", "version": "v3"}}, context)
    assert out["bucket"] == BUCKET and out["key"] == "inputs/big.csv" and out["model_version"]
    # the object version the event announced, which the Map's ItemReader reads (template.yaml)
    assert out["version"] == "v3"


def test_a_plan_without_the_objects_version_is_a_bad_request(handler_with, context):
    from rlambda.errors import BadRequest

    with pytest.raises(BadRequest, match="Plan.version is required"):
        handler_with.batch_handler({"Plan": {"bucket": BUCKET, "key": "inputs/big.csv"}}, context)


def test_collect_indexes_every_part_every_error_and_every_failed_batch(s3, handler_with, event, context):
    s3.create_bucket(Bucket=BUCKET)
    scored = handler_with.batch_handler(event("sfn_map_batch.json"), context)
    stale = "outputs/big/part-0000000001.errors.csv"  # from an earlier run with other batches
    s3.put_object(Bucket=BUCKET, Key=stale, Body=b"row,reason\n")
    manifest = event("sfn_map_manifest.json")
    run = "outputs/.map-runs/ad9b5f27-090b-3ac6-9beb-243cd77144a7"
    s3.put_object(Bucket=BUCKET, Key=f"{run}/manifest.json", Body=json.dumps(manifest).encode())
    succeeded = [{"Status": "SUCCEEDED", "Output": json.dumps(scored), "Input": "{}"}]
    s3.put_object(Bucket=BUCKET, Key=f"{run}/SUCCEEDED_0.json", Body=json.dumps(succeeded).encode())
    s3.put_object(Bucket=BUCKET, Key=f"{run}/FAILED_0.json", Body=json.dumps(event("sfn_map_result_failed.json")).encode())
    out = handler_with.batch_handler(
        {"Collect": {"bucket": BUCKET, "key": "inputs/big.csv", "manifest": f"{run}/manifest.json"}}, context)
    assert (out["rows"], out["scored"], out["failed"], out["complete"]) == (4, 2, 2, False)
    index = json.loads(s3.get_object(Bucket=BUCKET, Key="outputs/big.manifest.json")["Body"].read())
    assert index["parts"] == [f"s3://{BUCKET}/outputs/big/part-0000004001.csv"]
    assert index["errors"] == [f"s3://{BUCKET}/outputs/big/part-0000004001.errors.csv"]
    (failed,) = index["failed_batches"]
    assert failed["rows"] == [6001, 8000] and failed["error"] == "Sandbox.Timedout"
    assert index["stale_parts_deleted"] == 1
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="outputs/big/")["Contents"]]
    assert stale not in keys


def test_an_eventbridge_object_created_event_is_scored(s3, handler_with, event, context):
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    put = s3.put_object(Bucket=BUCKET, Key="inputs/applicants.csv", Body=b"gre,gpa,rank\n800,4,1\n800,4,4\n")
    # overwritten after the event: the event's version is the one scored
    s3.put_object(Bucket=BUCKET, Key="inputs/applicants.csv", Body=b"gre,gpa,rank\n800,4,4\n")
    ev = event("eventbridge_s3_object_created_inputs.json")
    ev["detail"]["object"]["version-id"] = put["VersionId"]
    (result,) = handler_with.batch_handler(ev, context)["results"]
    assert (result["status"], result["scored"], result["failed"]) == ("scored", 2, 0)
    assert [r[-3] for r in rows(s3, "outputs/applicants.csv")[1:]] == ["True", "False"]
