"""The embedded R session: the only module that imports rpy2.

R is single-threaded, so every call into it holds one re-entrant lock
(rpy2's own ``openrlib.rlock``, which rpy2 also takes internally). The
low-level ``rpy2.rinterface`` layer is used instead of ``robjects``: it needs
no conversion context (which a new thread does not inherit) and it is what
makes a one-row prediction cost tens of microseconds of Python, not hundreds.
"""

from __future__ import annotations

import os
import threading
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

_HERE = Path(__file__).resolve().parent
_HELPERS = _HERE / "serve.R"

# Where to look for R when R_HOME is not set: a trimmed R bundled beside this
# package (the Lambda zip), then the usual system locations. Setting R_HOME
# ourselves spares rpy2 a `R RHOME` subprocess at cold start.
_R_HOME_CANDIDATES = (
    _HERE.parent / "R",
    Path("/usr/lib/R"),
    Path("/usr/lib64/R"),
    Path("/usr/local/lib/R"),
    Path("/opt/R"),
)


class RError(Exception):
    """R signalled an error; the message is R's own, for logs only."""


class RUnavailable(Exception):
    """R itself could not be found or started."""


@dataclass(frozen=True)
class Numeric:
    """A column of doubles."""

    values: Sequence[float]


@dataclass(frozen=True)
class Logical:
    """A column of TRUE/FALSE."""

    values: Sequence[bool]


@dataclass(frozen=True)
class Factor:
    """A factor column: 1-based codes into ``levels``."""

    codes: Sequence[int]
    levels: Sequence[str]


@dataclass(frozen=True)
class Text:
    """A character column."""

    values: Sequence[str]


Column = Union[Numeric, Logical, Factor, Text]


def _find_r_home() -> None:
    if os.environ.get("R_HOME"):
        return
    for candidate in _R_HOME_CANDIDATES:
        if (candidate / "bin" / "Rscript").exists() or (candidate / "lib" / "libR.so").exists():
            os.environ["R_HOME"] = str(candidate)
            return


_ri: Any = None
_helpers: dict[str, Any] = {}
_start_lock = threading.Lock()


def lock() -> Any:
    """The lock every call into R holds (re-entrant, shared with rpy2)."""
    from rpy2.rinterface_lib import openrlib

    return openrlib.rlock


def start() -> None:
    """Start the embedded R once per process and define the helpers (idempotent)."""
    global _ri
    if _ri is not None:
        return
    with _start_lock:
        if _ri is not None:
            return
        _find_r_home()
        try:
            import rpy2.rinterface as ri
        except Exception as exc:  # a missing libR.so or R_HOME surfaces here
            raise RUnavailable(f"cannot load R: {exc}") from exc
        with lock():
            # initr_simple: skips rpy2's extra `Rscript` call that copies the
            # R front-end's environment variables; embedded R reads
            # R_HOME/etc/Renviron itself.
            ri.initr_simple()
            env = ri.baseenv["new.env"]()
            try:
                ri.evalr(_HELPERS.read_text(encoding="utf-8"), envir=env)
            except ri.embedded.RRuntimeError as exc:
                raise RUnavailable(f"cannot define the R helpers: {exc}") from exc
            for name in ("rl_read", "rl_describe", "rl_scorer", "rl_version"):
                _helpers[name] = env[name]
        _ri = ri


def _call(name: str, *args: Any) -> Any:
    start()
    with lock():
        try:
            return _helpers[name](*args)
        except _ri.embedded.RRuntimeError as exc:
            raise RError(str(exc).strip()) from exc


def versions() -> dict[str, str]:
    """R's and rpy2's version strings."""
    import rpy2

    return {"r": str(_call("rl_version")[0]), "rpy2": rpy2.__version__}


def _py(value: Any) -> Any:
    """Convert a small R description (list/character/logical) to Python."""
    ri = _ri
    if isinstance(value, ri.ListSexpVector):
        names = value.names
        items = [_py(v) for v in value]
        if names is not ri.NULL and names is not None:
            return dict(zip(names, items))
        return items
    if isinstance(value, (ri.StrSexpVector, ri.FloatSexpVector, ri.IntSexpVector, ri.BoolSexpVector)):
        return list(value)
    return value


class RModel:
    """A fitted R object read into the session, with its scorer closure."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        start()
        with lock():
            self._fit = _call("rl_read", _ri.StrSexpVector([str(path)]))
            self._scorer = _call("rl_scorer", self._fit)
            self.description: dict[str, Any] = _py(_call("rl_describe", self._fit))

    def score(self, columns: Sequence[Column], n: int) -> list[float]:
        """Predictions on the response scale for ``n`` rows, in one R call.

        ``columns`` follow the order of ``description["names"]``.
        """
        ri = _ri
        with lock():
            cols = ri.ListSexpVector([_to_r(col) for col in columns])
            out = self._call_scorer(cols, ri.IntSexpVector([n]))
            if not isinstance(out, ri.FloatSexpVector):
                raise RError(f"predict returned an R {type(out).__name__}, not numbers")
            if len(out) != n:
                raise RError(f"predict returned {len(out)} values for {n} rows")
            return _doubles_of(out, n)

    def _call_scorer(self, *args: Any) -> Any:
        try:
            return self._scorer(*args)
        except _ri.embedded.RRuntimeError as exc:
            raise RError(str(exc).strip()) from exc


def _doubles_of(vec: Any, n: int) -> list[float]:
    # Not vec.memoryview(): in rpy2 3.5.17 it drops a reference to None on
    # every call, and the interpreter aborts once None's count reaches zero
    # (Python 3.11; found by a 3,000-request run). Unpacking the data
    # pointer is as fast and touches no reference counts.
    from rpy2.rinterface_lib import openrlib

    return openrlib.ffi.unpack(openrlib.REAL(vec.__sexp__._cdata), n)


def _to_r(col: Column) -> Any:
    ri = _ri
    if isinstance(col, Numeric):
        return ri.FloatSexpVector.from_memoryview(memoryview(_doubles(col.values)))
    if isinstance(col, Factor):
        # codes only: the scorer in R attaches the levels it already holds
        return ri.IntSexpVector.from_memoryview(memoryview(_ints(col.codes)))
    if isinstance(col, Logical):
        return ri.BoolSexpVector(list(col.values))
    return ri.StrSexpVector(list(col.values))


def _doubles(values: Sequence[float]) -> array:
    return values if isinstance(values, array) and values.typecode == "d" else array("d", values)


def _ints(values: Sequence[int]) -> array:
    return values if isinstance(values, array) and values.typecode == "i" else array("i", values)
