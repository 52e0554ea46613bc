"""The model's life: retrain on new data, hot rollout, integrity, rollback, bad data."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from rlambda.app import App
from rlambda.blobs import S3Blobs
from rlambda.registry import Registry, main as registry_main
from rlambda.settings import Settings
from rlambda.store import Store
from rlambda.trainer import Trainer

BUCKET = "admission-models"
FOLDER = f"s3://{BUCKET}/models/admission/"
APPLICANT = {"gre": 800, "gpa": 4, "rank": 1}


def simulated_csv(tmp: Path, seed: int) -> bytes:
    out = tmp / f"sim-{seed}.csv"
    subprocess.run(["Rscript", str(ROOT / "models" / "simulate.R"), "--out", str(out), "--seed", str(seed)],
                   check=True, capture_output=True)
    return out.read_bytes()


@pytest.fixture
def world(s3, tmp_path):
    """A bucket with one served version trained from the simulated data."""
    s3.create_bucket(Bucket=BUCKET)
    store = Store(str(tmp_path / "cache"), s3_client=s3)
    trainer = Trainer(store, FOLDER, gate_margin=0.05)
    s3.put_object(Bucket=BUCKET, Key="data/first.csv", Body=simulated_csv(tmp_path, 2017))
    first = trainer.retrain(S3Blobs(s3, BUCKET), "data/first.csv")
    assert first.status == "promoted", first.reason
    return {"s3": s3, "store": store, "trainer": trainer, "first": first.version, "tmp": tmp_path,
            "registry": Registry(S3Blobs(s3, BUCKET), "models/admission/")}


def serving_app(world: dict[str, Any], refresh_s: float = 0.05) -> App:
    cache = world["tmp"] / "serve-cache"
    return App(Settings(model_uri=FOLDER, cache_dir=str(cache), refresh_s=refresh_s), Store(str(cache), world["s3"]))


def s3_event(event, bucket: str, key: str) -> dict[str, Any]:
    ev = event("s3_object_created_data.json")
    ev["Records"][0]["s3"]["bucket"]["name"] = bucket
    ev["Records"][0]["s3"]["object"]["key"] = key
    return ev


def test_manifest_describes_the_version(world):
    manifest = world["registry"].manifest(world["first"])
    assert manifest["version"] == world["first"]
    assert len(manifest["sha256"]) == 64 and manifest["created_at"].endswith("Z")
    assert manifest["training_data"]["rows"] == 400 and manifest["training_data"]["uri"].endswith("data/first.csv")
    holdout = manifest["metrics"]["holdout"]
    assert 0 < holdout["logloss"] < 1 and 0.5 < holdout["auc"] <= 1 and holdout["rows"] == 100
    assert manifest["gate"]["passed"] is True
    assert {"name": "rank", "type": "factor", "levels": ["1", "2", "3", "4"]} in manifest["predictors"]
    assert manifest["r_version"].startswith("4.")


def test_retrain_event_rolls_out_without_restart(world, event, context, monkeypatch):
    # GIVEN a serving function answering with the first version
    app = serving_app(world)
    before = app.handle(APPLICANT, context)
    assert before["model"]["version"] == world["first"]
    # WHEN new data lands under data/ and the retrain handler gets the S3 event
    import handler

    monkeypatch.setattr(handler, "app", app)
    world["s3"].put_object(Bucket=BUCKET, Key="data/second batch.csv", Body=simulated_csv(world["tmp"], 11))
    out = handler.retrain_handler(s3_event(event, BUCKET, "data/second+batch.csv"), context)
    (result,) = out["results"]
    assert result["status"] == "promoted", result
    # THEN after the refresh interval the same process answers with the new version
    time.sleep(0.06)
    after = app.handle(APPLICANT, context)
    assert after["model"]["version"] == result["version"] != world["first"]
    assert after["probability"] != before["probability"]


def test_unchanged_pointer_costs_one_conditional_request(world, context):
    app = serving_app(world)
    app.handle(APPLICANT, context)
    calls: list[dict[str, Any]] = []
    world["s3"].meta.events.register("before-parameter-build.s3.GetObject", lambda params, **kw: calls.append(dict(params)))
    time.sleep(0.06)
    app.handle(APPLICANT, context)
    assert [c["Key"] for c in calls] == ["models/admission/current.json"]
    assert calls[0].get("IfNoneMatch")


def test_duplicate_event_creates_one_version(world):
    s3, trainer = world["s3"], world["trainer"]
    s3.put_object(Bucket=BUCKET, Key="data/again.csv", Body=simulated_csv(world["tmp"], 5))
    first = trainer.retrain(S3Blobs(s3, BUCKET), "data/again.csv")
    second = trainer.retrain(S3Blobs(s3, BUCKET), "data/again.csv")
    assert (first.status, second.status) == ("promoted", "duplicate")
    assert first.version == second.version
    assert len(world["registry"].versions()) == 2


@pytest.mark.parametrize(
    "content,words",
    [
        (b"", "no lines available"),
        (b"admit,gre,gpa,rank\n", "no rows"),
        (b"admit,gre,gpa\n1,300,3\n0,400,3.5\n", "lacks column(s) rank"),
        (b"admit,gre,gpa,rank\n1,300,3,1\n0,abc,3.5,2\n", "column gre row 2 is 'abc'"),
        (b"admit,gre,gpa,rank\n1,300,3,1\n0,400,3.5,7\n", "rank has level(s) 7"),
        (b'admit,gre,"gpa,rank\n1,300,3,1\n', "cannot read"),
        (b"\x00\x01\x02binary\xff\xfe", "cannot read"),
    ],
)
def test_bad_data_leaves_the_served_model_untouched(world, context, content, words):
    s3, registry = world["s3"], world["registry"]
    pointer = registry.pointer()
    app = serving_app(world)
    before = app.handle(APPLICANT, context)
    s3.put_object(Bucket=BUCKET, Key="data/bad.csv", Body=content)
    outcome = world["trainer"].retrain(S3Blobs(s3, BUCKET), "data/bad.csv")
    assert outcome.status == "rejected" and words in outcome.reason, outcome.reason
    assert "s3://" in outcome.reason or words in outcome.reason
    assert registry.pointer() == pointer
    assert len(registry.versions()) == 1
    time.sleep(0.06)
    assert app.handle(APPLICANT, context) == before


def test_worse_model_is_stored_but_not_served(world):
    s3, registry = world["s3"], world["registry"]
    # GIVEN only 40 rows: a model fitted on 30 of them predicts the other 10
    # much worse than the served model does (seeded split, deterministic)
    lines = simulated_csv(world["tmp"], 2017).decode().splitlines()[:41]
    s3.put_object(Bucket=BUCKET, Key="data/small.csv", Body=("\n".join(lines) + "\n").encode())
    outcome = world["trainer"].retrain(S3Blobs(s3, BUCKET), "data/small.csv")
    # THEN the version is kept for inspection but the pointer does not move
    assert outcome.status == "stored" and "worse" in outcome.reason
    assert registry.pointer().version == world["first"]
    manifest = registry.manifest(outcome.version)
    assert manifest["gate"]["passed"] is False and "worse" in manifest["gate"]["reason"]


def test_tampered_model_is_refused_and_the_old_one_keeps_serving(world, context):
    s3, registry = world["s3"], world["registry"]
    app = serving_app(world)
    assert app.handle(APPLICANT, context)["model"]["version"] == world["first"]
    # a second, good version is published, then its file is swapped for another model
    s3.put_object(Bucket=BUCKET, Key="data/b.csv", Body=simulated_csv(world["tmp"], 13))
    second = world["trainer"].retrain(S3Blobs(s3, BUCKET), "data/b.csv")
    assert second.status == "promoted"
    first_rds = s3.get_object(Bucket=BUCKET, Key=registry.model_key(world["first"]))["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=registry.model_key(second.version), Body=first_rds)
    time.sleep(0.06)
    # the running function refuses it and keeps answering with the first version
    assert app.handle(APPLICANT, context)["model"]["version"] == world["first"]
    # a new container has no previous model: a clear 500 that names the problem
    fresh = serving_app(world)
    from rlambda.errors import HTTPError

    with pytest.raises(HTTPError) as caught:
        fresh.handle(APPLICANT, context)
    err = json.loads(str(caught.value))
    assert err["httpStatus"] == 500 and "does not match its manifest" in err["message"]
    assert not list((world["tmp"] / "serve-cache").rglob(f"{second.version}.rds"))


def test_rollback_moves_the_pointer_back(world, context, capsys, monkeypatch):
    s3 = world["s3"]
    s3.put_object(Bucket=BUCKET, Key="data/c.csv", Body=simulated_csv(world["tmp"], 44))
    second = world["trainer"].retrain(S3Blobs(s3, BUCKET), "data/c.csv")
    app = serving_app(world)
    assert app.handle(APPLICANT, context)["model"]["version"] == second.version
    import rlambda.registry as registry_module

    monkeypatch.setattr(registry_module, "registry_for", lambda uri, s3_client=None: world["registry"])
    assert registry_main(["--uri", FOLDER, "list"]) == 0
    listing = capsys.readouterr().out
    assert f"* {second.version}" in listing and world["first"] in listing
    assert registry_main(["--uri", FOLDER, "rollback"]) == 0
    time.sleep(0.06)
    assert app.handle(APPLICANT, context)["model"]["version"] == world["first"]


def test_folder_without_pointer_is_503(s3, tmp_path, context):
    s3.create_bucket(Bucket=BUCKET)
    app = App(Settings(model_uri=FOLDER, cache_dir=str(tmp_path)), Store(str(tmp_path), s3))
    from rlambda.errors import HTTPError

    with pytest.raises(HTTPError) as caught:
        app.handle(APPLICANT, context)
    err = json.loads(str(caught.value))
    assert err["httpStatus"] == 503 and "current.json" in err["message"]
