"""Retraining: new data in, a new model version out, served only if it is no worse.

The data is checked and the model fitted in the embedded R (rlambda/training.R,
the same code as models/train.R). The version name comes from the data's
sha256, so a duplicate S3 event (S3 delivers at least once) finds the version
already there and does nothing. Bad data raises nothing that could damage
what is served: the pointer moves only after a version is whole and passed
the quality gate.
"""

from __future__ import annotations

import hashlib
import re
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import rsession
from .blobs import Blobs
from .errors import HTTPError
from .location import Location
from .registry import PointerRace, Registry, utc_now
from .model import Model
from .store import ModelFile, Store

log = logging.getLogger(__name__)
TRAINING_R = Path(__file__).resolve().parent / "training.R"


@dataclass
class Outcome:
    """What one retraining did: promoted, stored (gate failed), duplicate or rejected."""

    status: str
    version: str | None = None
    reason: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """A small JSON-able summary for logs and the invocation's result."""
        return {"status": self.status, "version": self.version, "reason": self.reason}


def _scalar(value: Any) -> Any:
    if isinstance(value, list):
        return value[0] if len(value) == 1 else value
    if isinstance(value, dict):
        return {k: _scalar(v) for k, v in value.items()}
    return value


def _finite_or_none(metrics: Any) -> dict[str, Any] | None:
    if not isinstance(metrics, dict):
        return None
    out = {}
    for key, value in metrics.items():
        out[key] = value if isinstance(value, (int, float)) and value == value else None
    return out


class Trainer:
    """Refits the model from a CSV and publishes it as a new version."""

    def __init__(self, store: Store, model_uri: str, gate_margin: float = 0.05, holdout: float = 0.25) -> None:
        loc = Location.parse(model_uri)
        if not loc.folder:
            raise ValueError(f"MODEL_URI {model_uri!r} must be a folder (ending in /) for retraining to write versions")
        self.store = store
        self.model_uri = model_uri
        self.registry: Registry = store.registry(loc)
        self.gate_margin = gate_margin
        self.holdout = holdout

    def retrain(self, data: Blobs, key: str) -> Outcome:
        """Validate, evaluate, fit, publish and maybe promote; never raises for bad data."""
        self.store.cache_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="retrain-", dir=self.store.cache_dir))
        try:
            return self._retrain(data, key, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _retrain(self, data: Blobs, key: str, work: Path) -> Outcome:
        source = data.uri(key)
        csv_path = work / "data.csv"
        digest = hashlib.sha256()
        with data.open(key) as body, open(csv_path, "wb") as out:
            for chunk in iter(lambda: body.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        data_sha = digest.hexdigest()
        version = f"v-{data_sha[:16]}"
        if self.registry.has(version):
            return self._duplicate(version, source)

        current = self._current()
        model_path = work / "model.rds"
        try:
            result = _scalar(
                rsession.call_file(
                    TRAINING_R,
                    "rl_retrain",
                    str(csv_path),
                    str(model_path),
                    current.path if current else "",
                    int(data_sha[:7], 16),
                    self.holdout,
                )
            )
        except rsession.RError as exc:
            # R's "Error: " / "Error in f(x) : " prefix says nothing to a reader of the log
            reason = re.sub(r"^Error(?: in [^:]*)?:\s*", "", str(exc)).replace(str(csv_path), source)
            log.warning("training data rejected; the served model is untouched", extra={"data": source, "reason": reason})
            return Outcome("rejected", None, reason)

        new = _finite_or_none(result.get("new"))
        old = _finite_or_none(result.get("current"))
        passed, reason = self._gate(new, old)
        rds = model_path.read_bytes()
        rds_sha = hashlib.sha256(rds).hexdigest()
        # Loading it the way serving will proves the version can be served before it is published.
        described = Model.load(ModelFile(path=str(model_path), uri=source, sha256=rds_sha)).describe()
        if passed and current is not None:
            # Log-loss alone would let a CSV holding ranks 1-2 only narrow the API.
            served = Model.load(current).describe()
            narrowing = narrowed(served.get("predictors") or [], described.get("predictors") or [])
            if narrowing:
                passed, reason = False, f"the new model would narrow the API: {narrowing}"
        manifest = {
            "version": version,
            "sha256": rds_sha,
            "created_at": utc_now(),
            "training_data": {"uri": source, "sha256": data_sha, "rows": result.get("rows")},
            "metrics": {
                "holdout": new,
                "current_on_same_rows": old,
                "current_version": current.version if current else None,
                "train_rows": result.get("train_rows"),
                "holdout_rows": result.get("holdout_rows"),
            },
            "gate": {"passed": passed, "reason": reason, "metric": "logloss", "margin": self.gate_margin},
            "predictors": described.get("predictors"),
            "formula": described.get("formula"),
            "class": described.get("class"),
            "r_version": result.get("r_version"),
        }
        self.registry.publish(version, rds, manifest)
        if passed:
            return self._promote(version, reason, current.version if current else None, manifest)
        log.warning("new model version stored but not served", extra={"version": version, "reason": reason})
        return Outcome("stored", version, reason, manifest)

    def _promote(self, version: str, reason: str, gated_against: str | None, manifest: dict[str, Any]) -> Outcome:
        # Conditional on the pointer still being on the version the gate
        # compared with: a model that passed against v1 is no judgement on v2.
        try:
            self.registry.promote(version, reason, expect=gated_against)
        except PointerRace as exc:
            log.warning("new model version stored but not promoted", extra={"version": version, "reason": str(exc)})
            return Outcome("stored", version, str(exc), manifest)
        log.info("new model version promoted", extra={"version": version, "reason": reason})
        return Outcome("promoted", version, reason, manifest)

    def _duplicate(self, version: str, source: str) -> Outcome:
        """A redelivered event: finish a promotion a crash or a throttled write left undone."""
        manifest = self.registry.manifest(version)
        gate = manifest.get("gate") or {}
        pointer = self.registry.pointer()
        if pointer is not None and pointer.version == version:
            log.info("duplicate data event: version exists and is served", extra={"version": version, "data": source})
            return Outcome("duplicate", version, f"{source} was already trained as {version}", manifest)
        gated_against = (manifest.get("metrics") or {}).get("current_version")
        served = pointer.version if pointer else None
        if not gate.get("passed") or served != gated_against:
            # Failed its gate, or the pointer moved past it since: nothing to finish.
            why = "its gate failed" if not gate.get("passed") else f"the pointer has moved on to {served}"
            log.info("duplicate data event: version exists, not promoted", extra={"version": version, "reason": why})
            return Outcome("duplicate", version, f"{source} was already trained as {version}; {why}", manifest)
        log.warning("duplicate data event: completing an interrupted promotion", extra={"version": version})
        return self._promote(version, str(gate.get("reason", "")) + " (promotion completed on redelivery)",
                             gated_against, manifest)

    def _current(self) -> Any:
        if self.registry.pointer() is None:
            return None
        try:
            return self.store.fetch(self.model_uri)
        except HTTPError as exc:
            # Without a trustworthy current model there is nothing to compare
            # with; refuse rather than promote blindly.
            raise RuntimeError(f"the served model cannot be read for comparison: {exc.message}") from None

    def _gate(self, new: dict[str, Any] | None, old: dict[str, Any] | None) -> tuple[bool, str]:
        if not new or new.get("logloss") is None:
            return False, "the new model has no held-out log-loss"
        if not old or old.get("logloss") is None:
            return True, f"first version (held-out log-loss {new['logloss']:.4f})"
        limit = old["logloss"] + self.gate_margin
        if new["logloss"] <= limit:
            return True, f"held-out log-loss {new['logloss']:.4f} <= current {old['logloss']:.4f} + {self.gate_margin}"
        return False, f"held-out log-loss {new['logloss']:.4f} is worse than current {old['logloss']:.4f} + {self.gate_margin}"


def narrowed(served: list[dict[str, Any]], new: list[dict[str, Any]]) -> str:
    """How the new prototype fails to cover the served one ("" when it does).

    The same predictors with the same types, and every level the served
    model accepts still accepted: otherwise clients' valid requests would
    start failing with a 400 after the promotion.
    """
    problems = []
    mine = {p["name"]: p for p in new}
    names = {p["name"] for p in served}
    for p in served:
        q = mine.get(p["name"])
        if q is None:
            problems.append(f"{p['name']} is gone")
        elif q["type"] != p["type"]:
            problems.append(f"{p['name']} changes type from {p['type']} to {q['type']}")
        else:
            lost = [lv for lv in p.get("levels") or [] if lv not in set(q.get("levels") or [])]
            if lost:
                problems.append(f"{p['name']} loses level(s) {', '.join(lost)}")
    extra = [n for n in mine if n not in names]
    if extra:
        problems.append(f"new predictor(s) {', '.join(extra)} would be required")
    return "; ".join(problems)


def gate_margin_from_env() -> float:
    """GATE_MARGIN (log-loss units, default 0.05)."""
    return float(os.environ.get("GATE_MARGIN", "0.05") or 0.05)
