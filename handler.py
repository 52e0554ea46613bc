"""AWS Lambda entry points: thin wiring around the ``rlambda`` package.

``lambda_handler`` answers API Gateway (REST and HTTP APIs), function URLs
and direct invocations (``aws lambda invoke``) with the model named by
``MODEL_URI``.
"""

from __future__ import annotations

from typing import Any, Callable

import gc

# Lambda's init allocates much and frees little: Python's cyclic collector
# made 43 passes over it, 7-9 ms in all (gc.callbacks, this machine). Off
# while the init runs, which also means no collection finalises an R object
# on the helper thread while R starts.
gc.disable()
try:
    # rlambda.rsession finds the trimmed R the zip carries at <task root>/R by itself.
    from rlambda import coldstart

    # Lambda's init: R starts on this thread while another imports the rest
    # of the service; then the model is downloaded and read into R, before
    # the first request. It never raises for a model or an R that fails:
    # that is logged and reported by the first request (503 with Retry-After).
    app = coldstart.init()
finally:
    # What the init made lives as long as the process: frozen, out of every
    # later collection. Enabled with it, the first allocation after the init
    # started a young collection over all of it: 5-6 ms (gc.callbacks, here)
    # of the first answer, for about 500 objects freed.
    gc.freeze()
    gc.enable()

from rlambda import snapstart  # noqa: E402 - after the init, whose imports it would delay

# With SnapStart: primed before the snapshot, renewed after each restore.
snapstart.register(app)


def lambda_handler(event: Any, context: Any) -> Any:
    """Score the model for any supported event shape."""
    return app.handle(event, context)


def pred_admit(gre: Any, gpa: Any, rank: Any) -> bool:
    """The original post's helper: True if the applicant is predicted to be admitted."""
    return bool(app.score({"gre": gre, "gpa": gpa, "rank": rank})["result"])


def _each_csv(event: Any, prefix: str, job: Callable[[Any, str], dict[str, Any]]) -> dict[str, Any]:
    """Run ``job(blobs, key)`` for each created CSV under ``prefix``; other keys are reported as ignored."""
    from rlambda.blobs import S3Blobs
    from rlambda.events import s3_objects

    results = []
    for obj in s3_objects(event):
        if not (obj.key.startswith(prefix) and obj.key.lower().endswith(".csv")):
            results.append({"status": "ignored", "key": obj.key, "reason": f"not a CSV under {prefix}"})
            continue
        # The event's versionId: the object it announced, even if the key was overwritten since.
        pinned = {obj.key: obj.version} if obj.version else None
        results.append({**job(S3Blobs(app.store.s3, obj.bucket, pinned), obj.key), "key": obj.key})
    return {"results": results}


def retrain_handler(event: Any, context: Any) -> dict[str, Any]:
    """S3 ObjectCreated under data/ -> refit, publish a version, promote it if it passes the gate."""
    from rlambda.trainer import Trainer, gate_margin_from_env

    trainer = Trainer(app.store, app.settings.model_uri, gate_margin_from_env())
    return _each_csv(event, "data/", lambda blobs, key: trainer.retrain(blobs, key).summary())


def batch_handler(event: Any, context: Any) -> dict[str, Any]:
    """Batch scoring, for four event shapes.

    - S3 ObjectCreated (notification or EventBridge) under inputs/ ->
      outputs/<name>.csv (+ .errors.csv for rows that fail);
    - a Step Functions Distributed Map batch (``{"Items", "BatchInput"}``) ->
      outputs/<name>/part-<first row>.csv (+ .errors.csv);
    - ``{"Plan": {bucket, key, version}}`` -> the CSV's object version and the model version the run will use;
    - ``{"Collect": {bucket, key, manifest}}`` -> outputs/<name>.manifest.json.
    """
    from rlambda import batch
    from rlambda.blobs import S3Blobs

    if isinstance(event, dict) and "Items" in event:
        job = batch.MapBatch.from_event(event)
        result = batch.score_items(app.model(), job, S3Blobs(app.store.s3, job.bucket), tmp_dir=app.settings.cache_dir)
        return {"status": "scored", **result.summary()}
    if isinstance(event, dict) and "Plan" in event:
        return batch.plan(event["Plan"], app.model())
    if isinstance(event, dict) and "Collect" in event:
        req = event["Collect"]
        return batch.collect(S3Blobs(app.store.s3, req["bucket"]), req["key"], req["manifest"])

    def score(blobs: Any, key: str) -> dict[str, Any]:
        result = batch.score_file(app.model(), blobs, key, tmp_dir=app.settings.cache_dir)
        return {"status": "refused" if result.refused else "scored", **result.summary()}

    return _each_csv(event, "inputs/", score)
