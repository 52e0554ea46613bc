"""Batch scoring: a CSV dropped under inputs/ becomes outputs/<name>.csv (+ .errors.csv)."""

from __future__ import annotations

import csv
import io
import random
from typing import Any

import pytest

from rlambda.app import App
from rlambda.batch import output_keys, score_file
from rlambda.blobs import DirBlobs
from rlambda.settings import Settings

BUCKET = "admission-batch"


def read_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


@pytest.fixture
def app(model_path, tmp_path) -> App:
    return App(Settings(model_uri=str(model_path), cache_dir=str(tmp_path / "cache")))


def test_output_names():
    assert output_keys("inputs/applicants.csv") == ("outputs/applicants.csv", "outputs/applicants.errors.csv")
    assert output_keys("inputs/2026/nov.CSV") == ("outputs/2026/nov.csv", "outputs/2026/nov.errors.csv")


def test_100k_rows_every_row_scored_or_reported(app, tmp_path, context):
    # GIVEN 100,000 applicants, 1 in 997 with a bad gre and 1 in 1,009 with an unknown rank
    rng = random.Random(3)
    lines = ["id,gre,gpa,rank"]
    bad = 0
    for i in range(100_000):
        gre: Any = rng.randrange(200, 801, 20)
        rank: Any = rng.randint(1, 4)
        if i % 997 == 0:
            gre, bad = "n/a", bad + 1
        elif i % 1009 == 0:
            rank, bad = 9, bad + 1
        lines.append(f"a{i},{gre},{rng.uniform(2, 4):.2f},{rank}")
    root = tmp_path / "store"
    (root / "inputs").mkdir(parents=True)
    (root / "inputs" / "big.csv").write_text("\n".join(lines) + "\n")
    # WHEN it is scored
    result = score_file(app.model(), DirBlobs(root), "inputs/big.csv", chunk_bytes=200_000, tmp_dir=str(tmp_path))
    # THEN exactly 100,000 rows come out, scored or reported with a reason
    scored = read_csv((root / "outputs" / "big.csv").read_bytes())
    errors = read_csv((root / "outputs" / "big.errors.csv").read_bytes())
    assert (result.rows, result.scored, result.failed) == (100_000, 100_000 - bad, bad)
    assert len(scored) + len(errors) == 100_000
    assert {e["id"] for e in errors} == {f"a{i}" for i in range(100_000) if i % 997 == 0 or i % 1009 == 0}
    assert any("gre must be a finite number" in e["reason"] for e in errors)
    assert any("rank must be one of 1, 2, 3, 4" in e["reason"] for e in errors)
    # AND the scored rows equal what the API answers for the same applicant
    for row in scored[:: 9_973]:
        answer = app.handle({k: row[k] for k in ("gre", "gpa", "rank")}, context)
        assert float(row["probability"]) == pytest.approx(answer["probability"], abs=1e-15)
        assert row["result"] == str(answer["result"])
        assert row["model_version"] == answer["model"]["version"]
    assert list(scored[0]) == ["id", "gre", "gpa", "rank", "result", "probability", "model_version"]


def test_batch_handler_on_an_s3_event(s3, app, event, context, monkeypatch):
    import handler

    monkeypatch.setattr(handler, "app", app)
    s3.create_bucket(Bucket=BUCKET)
    body = "gre,gpa,rank\n800,4,1\n800,4,4\nabc,4,1\n700,3.1\n"
    s3.put_object(Bucket=BUCKET, Key="inputs/applicants.csv", Body=body.encode())
    ev = event("s3_object_created_inputs.json")
    ev["Records"][0]["s3"]["bucket"]["name"] = BUCKET
    out = handler.batch_handler(ev, context)
    (result,) = out["results"]
    assert (result["status"], result["rows"], result["scored"], result["failed"]) == ("scored", 4, 2, 2)
    scored = read_csv(s3.get_object(Bucket=BUCKET, Key="outputs/applicants.csv")["Body"].read())
    assert [r["result"] for r in scored] == ["True", "False"]
    errors = read_csv(s3.get_object(Bucket=BUCKET, Key="outputs/applicants.errors.csv")["Body"].read())
    assert [(e["row"], e["reason"]) for e in errors] == [
        ("3", "gre must be a finite number, got 'abc'"),
        ("4", "has 2 fields, the header has 3"),
    ]


def test_outputs_never_retrigger_and_other_keys_are_ignored(s3, app, event, context, monkeypatch):
    import handler

    monkeypatch.setattr(handler, "app", app)
    ev = event("s3_object_created_inputs.json")
    ev["Records"][0]["s3"]["object"]["key"] = "outputs/applicants.csv"
    assert handler.batch_handler(ev, context)["results"][0]["status"] == "ignored"


def test_empty_file_is_reported(app, tmp_path):
    root = tmp_path / "store"
    (root / "inputs").mkdir(parents=True)
    (root / "inputs" / "empty.csv").write_bytes(b"")
    result = score_file(app.model(), DirBlobs(root), "inputs/empty.csv", tmp_dir=str(tmp_path))
    assert result.failed == 1 and result.scored == 0
    errors = read_csv((root / "outputs" / "empty.errors.csv").read_bytes())
    assert "empty" in errors[0]["reason"]


def test_missing_column_reports_every_row(app, tmp_path):
    root = tmp_path / "store"
    (root / "inputs").mkdir(parents=True)
    (root / "inputs" / "norank.csv").write_text("gre,gpa\n800,4\n700,3\n")
    result = score_file(app.model(), DirBlobs(root), "inputs/norank.csv", tmp_dir=str(tmp_path))
    assert (result.scored, result.failed) == (0, 2)
    errors = read_csv((root / "outputs" / "norank.errors.csv").read_bytes())
    assert all("rank is required" in e["reason"] for e in errors)
