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


class Model:
    """A fitted R model read once into the embedded R, ready to score rows."""

    def __init__(self, rmodel: rsession.RModel, source: ModelFile, threshold: float = 0.5) -> None:
        self._r = rmodel
        self.source = source
        self.threshold = threshold
        self.description = rmodel.description
        self.kind: str = str(self.description["kind"][0])
        self.prototype = Prototype.from_description(self.description)
        unsupported = self.prototype.unsupported()
        if unsupported:
            names = ", ".join(f"{p.name} ({p.type})" for p in unsupported)
            raise ModelLoadError(f"the model needs predictors that JSON cannot carry: {names}")

    @classmethod
    def load(cls, source: ModelFile, threshold: float = 0.5) -> "Model":
        """Read the file into R (once) and derive the prototype from the object."""
        try:
            rmodel = rsession.RModel(source.path)
        except rsession.RError as exc:
            raise ModelLoadError(f"R cannot use {source.uri}: {exc}") from None
        return cls(rmodel, source, threshold)

    def _first(self, key: str) -> str:
        value = self.description.get(key) or [""]
        return str(value[0])

    def describe(self) -> dict[str, Any]:
        """What /metadata reports about this model."""
        return {
            "kind": self.kind,
            "class": self._first("class"),
            "family": self._first("family") or None,
            "link": self._first("link") or None,
            "formula": self._first("formula"),
            "predictors": self.prototype.describe(),
            "threshold": self.threshold if self.kind == "binary" else None,
            "outputs": ["result", "probability"] if self.kind == "binary" else ["prediction"],
        }

    def predict(self, rows: Sequence[Any], prefix: str | None = None) -> list[dict[str, Any]]:
        """Validate and score rows in one R call; one result dict per row."""
        columns = self.prototype.columns(rows, prefix)
        try:
            values = self._r.score(list(columns.values()), len(rows))
        except rsession.RError as exc:
            log.error("R failed to score", extra={"r_error": str(exc), "rows": len(rows)})
            raise InternalError("The model failed to score these rows; the error is logged.") from None
        if self.kind == "binary":
            threshold = self.threshold
            return [{"result": p > threshold, "probability": _finite(p)} for p in values]
        return [{"prediction": _finite(v)} for v in values]


def _finite(value: float) -> float | None:
    # JSON has no NaN: a model that yields one reports null rather than
    # producing a body that strict clients reject.
    return value if math.isfinite(value) else None
