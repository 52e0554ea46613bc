"""A loaded R model: its prototype, its metadata and its predict.

Like vetiver's model handler, the model owns what it accepts (the
prototype, derived from the R object), what it says about itself
(``describe``) and how it scores (``predict``). It never sees an event.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

from . import rsession
from .errors import InternalError
from .prototype import Prototype
from .store import ModelFile

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """The file is not a model this product can serve; the message says why."""


class ModelUnsupported(ModelLoadError):
    """The model's class is outside serve.R's table, or its answers differ from R's predict."""


class Model:
    """A fitted R model read once into the embedded R, ready to score rows.

    The response shape follows the model's ``kind``: ``binary`` classifiers
    give ``result`` (probability of the second class above the threshold)
    and ``probability``; ``multiclass`` ones give ``class`` and
    ``probabilities`` per class; ``label`` ones (whose R predict gives a
    class and no probabilities) give ``class``; ``regression`` gives
    ``prediction``. A class is always a name, never a code.
    """

    def __init__(self, rmodel: rsession.RModel, source: ModelFile, threshold: float = 0.5) -> None:
        self._r = rmodel
        self.source = source
        self.threshold = threshold
        self.description = rmodel.description
        self.kind: str = rmodel.kind
        self.classes: list[str] = [str(c) for c in self.description.get("classes") or []]
        self.prototype = Prototype.from_description(self.description)
        self.example, self.ranges = _explained(rmodel.explain, self.prototype)
        unsupported = self.prototype.unsupported()
        if unsupported:
            names = ", ".join(f"{p.name} ({p.type})" for p in unsupported)
            raise ModelLoadError(f"the model needs predictors that JSON cannot carry: {names}")

    @property
    def r(self) -> rsession.RModel:
        """The model in R, for R code that scores through its scorer (batch.R)."""
        return self._r

    @classmethod
    def load(cls, source: ModelFile, threshold: float = 0.5) -> "Model":
        """Read the file into R (once) and derive the prototype from the object."""
        try:
            rmodel = rsession.RModel(source.path)
        except rsession.RRefused as exc:
            # serve.R's own words (a missing package, an unsupported class, ...)
            raise (ModelUnsupported if exc.unsupported else ModelLoadError)(str(exc)) from None
        except rsession.RError as exc:
            raise ModelLoadError(f"R cannot use {source.uri}: {exc}") from None
        return cls(rmodel, source, threshold)

    def _first(self, key: str) -> str:
        value = self.description.get(key) or [""]
        return str(value[0])

    def describe(self) -> dict[str, Any]:
        """What /metadata reports about this model.

        ``classes`` (classifiers only) lists the classes in R's order; for a
        binary model ``result`` is true for ``positive_class``, the second.
        """
        out: dict[str, Any] = {
            "kind": self.kind,
            "class": self._first("class"),
            "family": self._first("family") or None,
            "link": self._first("link") or None,
            "formula": self._first("formula") or None,
            "preprocessing": self._first("preprocessing") or None,
            "packages": [str(p) for p in self.description.get("packages") or []],
            "predictors": [
                {**p, "range": self.ranges[p["name"]]} if p["name"] in self.ranges else p
                for p in self.prototype.describe()
            ],
            # A typical row (median / most frequent level), as vetiver's prototype carries one.
            "example": dict(self.example),
            "interval": self.has_interval,
            "threshold": self.threshold if self.kind == "binary" else None,
            "outputs": _OUTPUTS[self.kind],
            "served_by": self._first("served_by") or None,
            "check": self.check(),
        }
        if self.kind != "regression":
            out["classes"] = list(self.classes)
        if self.kind == "binary":
            out["positive_class"] = self.classes[1] if len(self.classes) == 2 else None
        return out

    def check(self) -> dict[str, Any]:
        """What the load-time comparison with R's own predict found (serve.R's rl_check)."""
        raw = self.description.get("check") or {}

        def one(key: str) -> Any:
            value = raw.get(key) or [None]
            return value[0] if isinstance(value, list) else value

        worst = one("max_rel_diff")
        return {
            "passed": bool(one("passed")),
            "rows": int(one("rows") or 0),
            "classes_compared": int(one("classes_compared") or 0),
            "max_rel_diff": worst if isinstance(worst, float) and math.isfinite(worst) else None,
            "tolerance": 1e-9,
            "reference": str(one("reference") or ""),
        }

    @property
    def has_interval(self) -> bool:
        """True when the API can return a confidence interval (lm, glm)."""
        return self._r.has_interval

    def predict(
        self, rows: Sequence[Any], prefix: str | None = None, interval: float | None = None
    ) -> list[dict[str, Any]]:
        """Validate and score rows in one R call; one result dict per row.

        With ``interval`` (a level in (0, 1), lm/glm only), each row also gets
        ``interval: {level, lower, upper}`` on the response scale, from R.
        """
        columns = self.prototype.columns(rows, prefix)
        try:
            values = self._r.score(list(columns.values()), len(rows))
            bounds = self._r.interval(list(columns.values()), len(rows), interval) if interval is not None else None
        except rsession.RError as exc:
            log.error("R failed to score", extra={"r_error": str(exc), "rows": len(rows)})
            raise InternalError("The model failed to score these rows; the error is logged.") from None
        if self.kind == "binary":
            threshold = self.threshold
            out = [{"result": p > threshold, "probability": _finite(p)} for p in values]
        elif self.kind == "multiclass":
            out = _multiclass(values, len(rows), self.classes)
        elif self.kind == "label":
            out = [{"class": _label(v, self.classes)} for v in values]
        else:
            out = [{"prediction": _finite(v)} for v in values]
        if bounds is not None:
            for row, lower, upper in zip(out, *bounds):
                row["interval"] = {"level": interval, "lower": _finite(lower), "upper": _finite(upper)}
        return out


_OUTPUTS = {
    "binary": ["result", "probability"],
    "multiclass": ["class", "probabilities"],
    "label": ["class"],
    "regression": ["prediction"],
}


def _multiclass(values: Sequence[float], n: int, classes: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of ``{"class", "probabilities"}`` from R's column-major n x (K+1) output."""
    k = len(classes)
    picks = values[k * n : (k + 1) * n]
    out = []
    for i in range(n):
        # The last column is R's 1-based pick; NaN when R could not decide.
        label = _label(picks[i], classes)
        probabilities = {c: _finite(values[j * n + i]) for j, c in enumerate(classes)}
        out.append({"class": label, "probabilities": probabilities})
    return out


def _label(pick: float, classes: Sequence[str]) -> str | None:
    """The class named by R's 1-based index; None (null) for NaN or out of range."""
    return classes[int(pick) - 1] if math.isfinite(pick) and 1 <= pick <= len(classes) else None


def _explained(explain: dict[str, Any], prototype: Prototype) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """The example row (JSON values by predictor type) and numeric ranges from explain.R."""
    example_r = explain.get("example") or {}
    ranges_r = explain.get("ranges") or {}
    example: dict[str, Any] = {}
    ranges: dict[str, list[float]] = {}
    for p in prototype.predictors:
        value = example_r.get(p.name)
        value = value[0] if isinstance(value, list) and len(value) == 1 else None
        if value is not None:
            if p.type == "integer":
                value = int(value)
            elif p.type == "numeric":
                value = float(value)
            elif p.type == "logical":
                value = bool(value)
            else:
                value = str(value)
        example[p.name] = value
        rng = ranges_r.get(p.name)
        if isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, float) and math.isfinite(v) for v in rng):
            ranges[p.name] = [float(rng[0]), float(rng[1])]
    return example, ranges


def _finite(value: float) -> float | None:
    # JSON has no NaN: a model that yields one reports null rather than
    # producing a body that strict clients reject.
    return value if math.isfinite(value) else None
