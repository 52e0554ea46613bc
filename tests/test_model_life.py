"""The model's life keeps its promises: interrupted promotions finish, the API never
narrows, the pointer is written conditionally, events name their object's version,
and a malformed pointer never takes down a serving model."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

import pytest

from rlambda.blobs import BlobChanged, DirBlobs, S3Blobs
from rlambda.registry import Registry
from test_versions import APPLICANT, BUCKET, s3_event, serving_app, simulated_csv, world  # noqa: F401


def test_crash_between_publish_and_promote_is_finished_by_the_redelivered_event(world, monkeypatch):
    s3, trainer, registry = world["s3"], world["trainer"], world["registry"]
    s3.put_object(Bucket=BUCKET, Key="data/next.csv", Body=simulated_csv(world["tmp"], 7))
    # GIVEN the function dies after publishing the version, before the pointer moves
    real = Registry.promote

    def crash(self, *args, **kwargs):
        raise SystemExit("injected crash between publish and promote")

    monkeypatch.setattr(Registry, "promote", crash)
    with pytest.raises(SystemExit):
        trainer.retrain(S3Blobs(s3, BUCKET), "data/next.csv")
    assert registry.pointer().version == world["first"]
    (new,) = [m["version"] for m in registry.versions() if m["version"] != world["first"]]
    assert registry.manifest(new)["gate"]["passed"] is True
    # WHEN S3 redelivers the event
    monkeypatch.setattr(Registry, "promote", real)
    outcome = trainer.retrain(S3Blobs(s3, BUCKET), "data/next.csv")
    # THEN the promotion is completed
    assert outcome.status == "promoted" and outcome.version == new, outcome.reason
    pointer = registry.pointer()
    assert pointer.version == new and pointer.previous == world["first"]
    assert "completed on redelivery" in pointer.reason
    # AND a further redelivery is a plain duplicate
    assert trainer.retrain(S3Blobs(s3, BUCKET), "data/next.csv").status == "duplicate"


def test_redelivery_does_not_promote_once_the_pointer_moved_past(world, monkeypatch):
    s3, trainer, registry = world["s3"], world["trainer"], world["registry"]
    s3.put_object(Bucket=BUCKET, Key="data/late.csv", Body=simulated_csv(world["tmp"], 8))
    real = Registry.promote
    monkeypatch.setattr(Registry, "promote", lambda self, *a, **k: (_ for _ in ()).throw(SystemExit("crash")))
    with pytest.raises(SystemExit):
        trainer.retrain(S3Blobs(s3, BUCKET), "data/late.csv")
    monkeypatch.setattr(Registry, "promote", real)
    # another version is promoted meanwhile
    s3.put_object(Bucket=BUCKET, Key="data/other.csv", Body=simulated_csv(world["tmp"], 9))
    other = trainer.retrain(S3Blobs(s3, BUCKET), "data/other.csv")
    assert other.status == "promoted"
    outcome = trainer.retrain(S3Blobs(s3, BUCKET), "data/late.csv")
    assert outcome.status == "duplicate" and "moved on" in outcome.reason
    assert registry.pointer().version == other.version


def test_a_narrowing_csv_is_refused(world, caplog):
    s3, registry = world["s3"], world["registry"]
    # GIVEN data holding ranks 1 and 2 only (the served model takes 1-4)
    lines = simulated_csv(world["tmp"], 2017).decode().splitlines()
    header, rows = lines[0], lines[1:]
    rank = [h.strip('"') for h in header.split(",")].index("rank")
    kept = [r for r in rows if r.split(",")[rank].strip('"') in ("1", "2")]
    s3.put_object(Bucket=BUCKET, Key="data/narrow.csv", Body=("\n".join([header, *kept]) + "\n").encode())
    with caplog.at_level(logging.WARNING):
        outcome = world["trainer"].retrain(S3Blobs(s3, BUCKET), "data/narrow.csv")
    # THEN it is stored, not served, and the manifest and the log say why
    assert outcome.status == "stored", outcome.reason
    assert "would narrow the API: rank loses level(s) 3, 4" in outcome.reason
    manifest = registry.manifest(outcome.version)
    assert manifest["gate"]["passed"] is False and "rank loses level(s) 3, 4" in manifest["gate"]["reason"]
    assert registry.pointer().version == world["first"]
    assert any("rank loses" in str(getattr(r, "reason", "")) for r in caplog.records)


def test_narrowed_names_every_kind_of_narrowing():
    from rlambda.trainer import narrowed

    served = [{"name": "gre", "type": "numeric"}, {"name": "rank", "type": "factor", "levels": ["1", "2", "3"]}]
    assert narrowed(served, served) == ""
    assert narrowed(served, [*served, {"name": "x", "type": "numeric"}]) == "new predictor(s) x would be required"
    wider = [served[0], {"name": "rank", "type": "factor", "levels": ["1", "2", "3", "4"]}]
    assert narrowed(served, wider) == ""
    assert narrowed(served, [{"name": "gre", "type": "integer"}, served[1]]) == "gre changes type from numeric to integer"
    assert narrowed(served, [served[0]]) == "rank is gone"


class _Interleaved:
    """Blobs whose first read of the pointer in each of two threads waits for the other:
    both promotions read the same pointer before either writes."""

    def __init__(self, inner: S3Blobs) -> None:
        self.inner = inner
        self.barrier = threading.Barrier(2, timeout=10)
        self.seen: set[int] = set()

    def get(self, key: str) -> Any:
        blob = self.inner.get(key)
        me = threading.get_ident()
        if key.endswith("current.json") and me not in self.seen:
            self.seen.add(me)
            self.barrier.wait()
        return blob

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_two_concurrent_promotes_leave_a_consistent_pointer_and_chain(world):
    s3 = world["s3"]
    trainer, registry = world["trainer"], world["registry"]
    # GIVEN two more versions, published but not served
    versions = []
    for seed in (21, 22):
        s3.put_object(Bucket=BUCKET, Key=f"data/c{seed}.csv", Body=simulated_csv(world["tmp"], seed))
        outcome = trainer.retrain(S3Blobs(s3, BUCKET), f"data/c{seed}.csv")
        versions.append(outcome.version)
    registry.promote(world["first"], "back to the first")
    racing = Registry(_Interleaved(S3Blobs(s3, BUCKET)), "models/admission/")
    # WHEN both are promoted at once, each having read the same pointer
    results: dict[str, Any] = {}
    threads = [threading.Thread(target=lambda v=v: results.__setitem__(v, racing.promote(v, "race"))) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # THEN one write won, the other re-read and wrote on top: the chain holds both
    assert set(results) == set(versions)
    pointer = registry.pointer()
    winner = next(v for v in versions if v != pointer.version)
    assert pointer.previous == winner
    assert results[winner].previous == world["first"]


def test_a_promotion_that_keeps_losing_gives_up_cleanly(world):
    from rlambda.registry import PointerRace

    class AlwaysChanged:
        def __init__(self, inner: S3Blobs) -> None:
            self.inner = inner

        def put_if(self, *args: Any, **kwargs: Any) -> str:
            raise BlobChanged("current.json")

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    before = world["registry"].pointer()
    losing = Registry(AlwaysChanged(S3Blobs(world["s3"], BUCKET)), "models/admission/")
    with pytest.raises(PointerRace, match="kept changing"):
        losing.promote(world["first"], "never")
    assert world["registry"].pointer() == before


def test_local_folder_writes_the_pointer_conditionally(tmp_path):
    blobs = DirBlobs(tmp_path)
    tag = blobs.put_if("current.json", b"1", None)
    with pytest.raises(BlobChanged):
        blobs.put_if("current.json", b"2", None)
    blobs.put_if("current.json", b"2", tag)
    with pytest.raises(BlobChanged):
        blobs.put_if("current.json", b"3", tag)
    assert blobs.get("current.json").data == b"2"
    assert blobs.keys("") == ["current.json"]


@pytest.mark.parametrize(
    "body",
    [
        b'["v1"]',
        b'"v1"',
        b"null",
        b'{"sha256": "abc"}',
        b'{"version": 5, "sha256": "abc"}',
        b'{"version": "../etc", "sha256": "abc"}',
        b'{"version": "v-0000000000000000", "sha256": "abc"}',
        b"{not json",
    ],
)
def test_a_malformed_pointer_keeps_the_current_model_serving(world, context, body, caplog):
    s3 = world["s3"]
    app = serving_app(world)
    before = app.handle(APPLICANT, context)
    assert before["model"]["version"] == world["first"]
    s3.put_object(Bucket=BUCKET, Key="models/admission/current.json", Body=body)
    time.sleep(0.06)
    with caplog.at_level(logging.ERROR):
        after = app.handle(APPLICANT, context)
    assert after == before
    assert any(r.getMessage().startswith("model refresh failed") for r in caplog.records)
    # AND a promotion repairs it
    world["registry"].promote(world["first"], "repair")
    assert world["registry"].pointer().version == world["first"]


def test_the_event_version_is_the_one_trained(world, event, context, monkeypatch):
    s3 = world["s3"]
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    first_body = simulated_csv(world["tmp"], 31)
    put = s3.put_object(Bucket=BUCKET, Key="data/over.csv", Body=first_body)
    # the key is overwritten before the function reads it
    s3.put_object(Bucket=BUCKET, Key="data/over.csv", Body=simulated_csv(world["tmp"], 32))
    import handler

    monkeypatch.setattr(handler, "app", serving_app(world))
    ev = s3_event(event, BUCKET, "data/over.csv")
    ev["Records"][0]["s3"]["object"]["versionId"] = put["VersionId"]
    (result,) = handler.retrain_handler(ev, context)["results"]
    assert result["version"] == "v-" + hashlib.sha256(first_body).hexdigest()[:16]


def test_a_retrain_gated_against_a_version_no_longer_served_is_stored_not_promoted(world):
    from rlambda.registry import PointerRace

    s3, trainer, registry = world["s3"], world["trainer"], world["registry"]
    s3.put_object(Bucket=BUCKET, Key="data/d.csv", Body=simulated_csv(world["tmp"], 23))
    second = trainer.retrain(S3Blobs(s3, BUCKET), "data/d.csv")
    registry.promote(world["first"], "back")
    # promote() refuses when the pointer is not where the caller expects it
    with pytest.raises(PointerRace, match="expected v-elsewhere"):
        registry.promote(second.version, "x", expect="v-elsewhere")
    assert registry.pointer().version == world["first"]
    # and the trainer reports such a version as stored, with the reason
    outcome = trainer._promote(second.version, "gate passed", "v-elsewhere", {})
    assert outcome.status == "stored" and "pointer moved" in outcome.reason
    assert registry.pointer().version == world["first"]
