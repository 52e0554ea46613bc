"""AWS Lambda entry points: thin wiring around the ``rlambda`` package.

``lambda_handler`` answers API Gateway (REST and HTTP APIs), function URLs
and direct invocations (``aws lambda invoke``) with the model named by
``MODEL_URI``.
"""

from __future__ import annotations

import sys
from typing import Any

# rlambda.rsession finds the trimmed R the zip carries at <task root>/R by itself.
from rlambda import logs, rsession
from rlambda.app import App

logs.configure()
app = App()

# Start R during Lambda's init phase (outside the billed, latency-visible
# first request). A failure here is reported by the first request instead.
try:
    rsession.start()
except Exception as exc:  # pragma: no cover - reported by requests as 503
    print(f"rlambda: R did not start at init: {exc}", file=sys.stderr)


def lambda_handler(event: Any, context: Any) -> Any:
    """Score the model for any supported event shape."""
    return app.handle(event, context)


def pred_admit(gre: Any, gpa: Any, rank: Any) -> bool:
    """The original post's helper: True if the applicant is predicted to be admitted."""
    return bool(app.score({"gre": gre, "gpa": gpa, "rank": rank})["result"])


def retrain_handler(event: Any, context: Any) -> dict[str, Any]:
    """S3 ObjectCreated under data/ -> refit, publish a version, promote it if it passes the gate."""
    from rlambda.blobs import S3Blobs
    from rlambda.events import s3_objects
    from rlambda.trainer import Trainer, gate_margin_from_env

    trainer = Trainer(app.store, app.settings.model_uri, gate_margin_from_env())
    outcomes = []
    for obj in s3_objects(event):
        if not (obj.key.startswith("data/") and obj.key.lower().endswith(".csv")):
            outcomes.append({"status": "ignored", "key": obj.key, "reason": "not a CSV under data/"})
            continue
        outcome = trainer.retrain(S3Blobs(app.store.s3, obj.bucket), obj.key)
        outcomes.append({**outcome.summary(), "key": obj.key})
    return {"results": outcomes}


def batch_handler(event: Any, context: Any) -> dict[str, Any]:
    """S3 ObjectCreated under inputs/ -> outputs/<name>.csv (+ .errors.csv for rows that fail)."""
    from rlambda.batch import score_file
    from rlambda.blobs import S3Blobs
    from rlambda.events import s3_objects

    results = []
    for obj in s3_objects(event):
        if not (obj.key.startswith("inputs/") and obj.key.lower().endswith(".csv")):
            results.append({"status": "ignored", "key": obj.key, "reason": "not a CSV under inputs/"})
            continue
        blobs = S3Blobs(app.store.s3, obj.bucket)
        result = score_file(app.model(), blobs, obj.key, tmp_dir=app.settings.cache_dir)
        results.append({"status": "scored", "key": obj.key, **result.summary()})
    return {"results": results}
