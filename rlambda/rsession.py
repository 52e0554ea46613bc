"""The embedded R session: the only module that imports rpy2.

R is single-threaded, so every call into it holds one re-entrant lock
(rpy2's own ``openrlib.rlock``, which rpy2 also takes internally). That
includes letting go of R objects: rpy2 calls R_ReleaseObject when the last
Python wrapper of an object is freed, so every wrapper made here is dropped
(``del``) before the lock is, on the normal path and on the error path, and
a model's scorer is let go under the lock by whichever thread drops the
model last. The
low-level ``rpy2.rinterface`` layer is used instead of ``robjects``: it needs
no conversion context (which a new thread does not inherit) and it is what
makes a one-row prediction cost tens of microseconds of Python, not hundreds.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from array import array
from typing import Any, Callable, Sequence, Union

_HERE = os.path.dirname(os.path.realpath(__file__))
_HELPERS = os.path.join(_HERE, "serve.R")
# Evaluated after serve.R into the same environment (example rows, intervals).
_EXPLAIN = os.path.join(_HERE, "explain.R")

# Where to look for R when R_HOME is not set: a trimmed R bundled beside this
# package (the Lambda zip), then the usual system locations. Setting R_HOME
# ourselves spares rpy2 a `R RHOME` subprocess at cold start.
_R_HOME_CANDIDATES = (
    os.path.join(os.path.dirname(_HERE), "R"),
    "/usr/lib/R",
    "/usr/lib64/R",
    "/usr/local/lib/R",
    "/opt/R",
)


class RError(Exception):
    """R signalled an error; the message is R's own, for logs only."""


class RRefused(RError):
    """serve.R refused the model on purpose; the message is meant for its owner.

    ``unsupported`` is true when the model is outside serve.R's table of
    classes or its served answers differ from R's own predict (rl_check).
    """

    def __init__(self, message: str, unsupported: bool = False) -> None:
        super().__init__(message)
        self.unsupported = unsupported


# serve.R's rl_refuse() starts its messages with this marker, and a model
# outside its table (or failing the check against R's predict) with both.
_REFUSAL = "[rlambda] "
_UNSUPPORTED = "[unsupported] "


class RUnavailable(Exception):
    """R itself could not be found or started."""


# The columns are plain classes, and this module uses os.path rather than
# pathlib: Lambda's init imports this module before R starts and the rest of
# the service beside R's start (coldstart.py), and dataclasses (with inspect,
# ast, dis) and pathlib took about 10 ms of that first part here.
class Numeric:
    """A column of doubles."""

    __slots__ = ("values",)

    def __init__(self, values: Sequence[float]) -> None:
        self.values = values


class Integer:
    """A column of R integers (whole numbers within 32 bits)."""

    __slots__ = ("values",)

    def __init__(self, values: Sequence[int]) -> None:
        self.values = values


class Logical:
    """A column of TRUE/FALSE."""

    __slots__ = ("values",)

    def __init__(self, values: Sequence[bool]) -> None:
        self.values = values


class Factor:
    """A factor column: 1-based codes into ``levels``."""

    __slots__ = ("codes", "levels")

    def __init__(self, codes: Sequence[int], levels: Sequence[str]) -> None:
        self.codes = codes
        self.levels = levels


class Text:
    """A character column."""

    __slots__ = ("values",)

    def __init__(self, values: Sequence[str]) -> None:
        self.values = values


Column = Union[Numeric, Integer, Logical, Factor, Text]


def _find_r_home() -> None:
    if os.environ.get("R_HOME"):
        return
    for candidate in _R_HOME_CANDIDATES:
        if os.path.exists(os.path.join(candidate, "bin", "Rscript")) or os.path.exists(
                os.path.join(candidate, "lib", "libR.so")):
            os.environ["R_HOME"] = candidate
            return


# The packages R attaches at start. R's default adds datasets, grDevices,
# graphics and methods, methods being the costly one: `Rscript -e NULL` took
# about 0.2 s with the defaults and about 0.1 s with these two here (a busy
# machine). stats is what lm/glm need; loading its namespace loads utils anyway, so
# attaching utils is nearly free and keeps serve.R's and training.R's plain
# calls (getS3method, read.csv) working. A model's own packages are loaded
# with it (serve.R's rl_require), and with them whatever they import
# (methods for S4 classes). R_DEFAULT_PACKAGES in the environment wins.
DEFAULT_PACKAGES = "utils,stats"

# R's JIT compiles every closure before its first call: reading a model runs
# serve.R's helpers once each, and compiling them took about 50 ms of the
# load and 10 ms of the first answer here, for no gain on a single call.
# Package code is byte-compiled when installed either way, and one row's
# p50 through lambda_handler measured the same with the JIT off (README,
# "Measured"). R_ENABLE_JIT in the environment wins.
JIT_LEVEL = "0"


# R's start is C code that lets go of Python's GIL, but it takes the GIL
# back now and then, and with another thread busy in Python (the init's
# imports and download run beside it, coldstart.py) each time it waited for that
# thread's time slice, 5 ms by default. Measured here on a quiet
# machine: R's start (initr) took 53-60 ms alone, 86-131 ms beside a thread
# spinning in Python at the default interval, 60-73 ms at 50 us; the whole
# cold start from S3 (bench_coldstart, two rounds, same run, when the
# download also ran beside R's start) 0.132 / 0.144 s against 0.141 /
# 0.152 s at 5 ms. Now that rpy2's own import runs beside R's start too
# (_initr), 1 ms measured the same as 50 us (two runs of 11, same code
# otherwise). Restored once R is up.
START_SWITCH_INTERVAL_S = 5e-5


def _ld_library_path(r_home: str) -> str:
    """The library path R's front end would add, read from R_HOME/etc/ldpaths.

    rpy2 asks a `Rscript` subprocess for it at import (a whole R start,
    0.1-0.2 s), only to prepend it to LD_LIBRARY_PATH, which is too late to
    matter for this process. The default of R_LD_LIBRARY_PATH in ldpaths is
    what that subprocess would report first: Debian's R names
    ``${R_HOME}/lib:/usr/lib/x86_64-linux-gnu``, the zip's bundled R
    ``${R_HOME}/lib:${R_HOME}/../lib``.
    """
    value = os.environ.get("R_LD_LIBRARY_PATH", "")
    if not value:
        try:
            with open(os.path.join(r_home, "etc", "ldpaths"), encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            text = ""
        found = re.search(r"\$\{R_LD_LIBRARY_PATH=((?:\$\{[^}]*\}|[^}])*)\}", text)
        value = found.group(1) if found else "${R_HOME}/lib"
    value = value.replace("${R_HOME}", r_home).replace("$R_HOME", r_home)
    return ":".join(part for part in value.split(":") if part and "$" not in part)


def _openrlib() -> Any:
    """rpy2's openrlib (which opens libR), imported without its `Rscript` subprocess."""
    module = sys.modules.get("rpy2.rinterface_lib.openrlib")
    if module is not None:
        return module
    _find_r_home()
    import rpy2.situation as situation

    asked = situation.r_ld_library_path_from_subprocess
    situation.r_ld_library_path_from_subprocess = _ld_library_path
    try:
        from rpy2.rinterface_lib import openrlib
    finally:
        # Only the import is spared: `python -m rpy2.situation` still asks R.
        situation.r_ld_library_path_from_subprocess = asked
    return openrlib


# Names R sets once its environment is otherwise final: R_SESSION_TMPDIR while
# it sets up its main loop (it never reads the old value: tempdir() is a new
# Rtmp folder whatever it was), _R_NS_LOAD_ around each loadNamespace (set,
# then unset), and _R_NO_REPORT_MISSING_NAMESPACES_ around serve.R's readRDS
# (empty reads as unset there). Made to exist, empty, before R starts, so
# that a later setenv replaces a value in place; _R_NS_LOAD_, unset after each
# load, comes back into the room it left, which glibc's realloc does not move
# (found with an LD_PRELOAD that logged every setenv and unsetenv of an init;
# tests/test_coldstart.py checks that the array stays put); see _initr.
_SET_LATER = ("R_SESSION_TMPDIR", "_R_NS_LOAD_", "_R_NO_REPORT_MISSING_NAMESPACES_")


# rpy2's own arguments for R's start (rpy2.rinterface_lib.embedded._options).
_R_OPTIONS = ("rpy2", "--quiet", "--no-save")


def _libr() -> tuple[Any, Any]:
    """rpy2's compiled interface to libR (the cffi module and its lib), without rpy2's Python layer.

    The module rpy2's openrlib picks, by its rule (RPY2_CFFI_MODE API or ABI,
    else API if it imports, else ABI); _finish_initr checks it is the same one.
    """
    mode = os.environ.get("RPY2_CFFI_MODE", "").upper()
    if mode != "ABI":
        try:
            import _rinterface_cffi_api as api  # type: ignore[import-not-found]

            return api, api.lib
        except ImportError:
            if mode == "API":
                raise
    import _rinterface_cffi_abi as abi  # type: ignore[import-not-found]

    # the path rpy2.situation.get_rlib_path gives on Linux; openrlib's own dlopen gets the same handle
    return abi, abi.ffi.dlopen(os.path.join(os.environ["R_HOME"], "lib", "libR.so"))


def _initr(beside: Callable[[], object] | None) -> tuple[Any, BaseException | None]:
    """Start R as rpy2's initr_simple does, with rpy2's Python imported beside R's start.

    Returns rpy2's rinterface and what ``beside`` raised. rpy2's initr needs
    all of rpy2 imported first (logging, inspect, subprocess, its own
    modules: about 25 ms of Python holding the GIL), and then starts R in C
    code that lets the GIL go (about 55 ms). Here R starts from rpy2's
    compiled cffi module alone, and a thread imports the rest of rpy2 while
    it does; rpy2 then adopts the running R with the steps its own _initr
    takes after setup_Rmainloop (tests/test_coldstart.py checks the state
    against rpy2's). Pinned: rpy2 3.5.17 (requirements.txt).

    ``beside`` is called between R's two start calls. Rf_initialize_R adds
    about 24 environment variables (R_HOME/etc/Renviron; about 1 ms);
    setup_Rmainloop adds R_SESSION_TMPDIR, then loads base and the default
    packages. glibc's setenv moves the environment array as it grows, so a
    getenv on another thread at that moment reads freed memory: a general
    protection fault in libc, seen once in CI when the model's download
    (name resolution, TLS) ran beside R's whole start. With the names R sets
    later made to exist beforehand (_SET_LATER), setup_Rmainloop adds none,
    the array stays put (tests/test_coldstart.py checks the pointer), and
    what ``beside`` starts may read the environment.
    """
    module, lib = _libr()
    ffi = module.ffi
    imported: dict[str, Any] = {}

    def import_rpy2() -> None:
        try:
            imported["ri"] = prepare()
        except BaseException as exc:  # raised on the starting thread
            imported["error"] = exc

    importer = threading.Thread(target=import_rpy2, name="rlambda-rpy2", daemon=True)
    # embedded._initr's steps before setup_Rmainloop
    options = [ffi.new("char[]", option.encode("ascii")) for option in _R_OPTIONS]
    lib.R_SignalHandlers = 0
    global _r_initialized
    _r_initialized = True  # a second Rf_initialize_R would not start R again: see start()
    lib.Rf_initialize_R(len(options), options)
    lib.R_CStackLimit = ffi.cast("uintptr_t", -1)  # its _DEFAULT_C_STACK_LIMIT: no check
    lib.R_Interactive = True
    importer.start()  # rpy2's Python: reads no environment variable of R's
    beside_error: BaseException | None = None
    if beside is not None:
        try:
            beside()
        except BaseException as exc:  # raised by start() once R is up, not into R's start
            beside_error = exc
    lib.setup_Rmainloop()
    importer.join()
    if "error" in imported:
        raise imported["error"]
    ri = imported["ri"]
    _finish_initr(ri, module)
    return ri, beside_error


def _finish_initr(ri: Any, module: Any) -> None:
    """rpy2's own steps after setup_Rmainloop (embedded._initr's, then initr_simple's), for the R started here."""
    import atexit

    from rpy2.rinterface_lib import _rinterface_capi, callbacks, embedded, ffi_proxy, openrlib

    if openrlib._rinterface_cffi is not module:
        raise RUnavailable(f"rpy2 chose {openrlib._rinterface_cffi.__name__}, R was started from {module.__name__}")
    rlib = openrlib.rlib
    embedded._setinitialized()
    rlib.R_Interactive = embedded._DEFAULT_R_INTERACTIVE
    rlib.R_Outputfile = openrlib.ffi.NULL
    rlib.R_Consolefile = openrlib.ffi.NULL
    abi = ffi_proxy.get_ffi_mode(module) == ffi_proxy.InterfaceType.ABI
    for symbol, callback in embedded.CALLBACK_INIT_PAIRS:
        embedded._setcallback(rlib, symbol, callbacks if abi else rlib, callback)
    atexit.register(ri.endr, 0)
    _rinterface_capi._register_external_symbols()
    ri._post_initr_setup()


_ri: Any = None
# R was started in this process (Rf_initialize_R), and rpy2 runs it: R starts
# once per process, so a failure between the two is not tried again.
_r_initialized = False
_adopted: Any = None
_helpers: dict[str, Any] = {}
_start_lock = threading.Lock()


def lock() -> Any:
    """The lock every call into R holds (re-entrant, shared with rpy2)."""
    return _openrlib().rlock


def prepare() -> Any:
    """rpy2's low-level layer, imported (libR opened, R not started by it)."""
    try:
        _openrlib()
        import rpy2.rinterface as ri
    except Exception as exc:  # a missing libR.so or R_HOME surfaces here
        raise RUnavailable(f"cannot load R: {exc}") from exc
    return ri


def start(beside: Callable[[], object] | None = None) -> None:
    """Start the embedded R once per process and define the helpers (idempotent).

    ``beside`` (Lambda's init: the thread that imports the service and
    downloads the model) is called on this thread once R's start has set
    every environment variable it sets, just before its long part (loading
    base and the default packages, about 55 ms); see _initr for why then.
    It is not called if R is already up; what it raises is raised here once R is.
    """
    global _ri, _adopted
    if _ri is not None:
        return
    with _start_lock:
        if _ri is not None:
            return
        beside_error: BaseException | None = None
        if _adopted is None:
            if _r_initialized:
                raise RUnavailable("R was started, but rpy2 could not take it over (logged when it happened)")
            _adopted, beside_error = _start_r(beside)
        ri = _adopted
        with lock():
            env = ri.baseenv["new.env"]()
            try:
                for path in (_HELPERS, _EXPLAIN):
                    with open(path, encoding="utf-8") as fh:
                        ri.evalr(fh.read(), envir=env)
            except ri.embedded.RRuntimeError as exc:
                raise RUnavailable(f"cannot define the R helpers: {exc}") from exc
            for name in ("rl_read", "rl_load", "rl_packages", "rl_version"):
                _helpers[name] = env[name]
            del env
        _ri = ri
    if beside_error is not None:
        raise beside_error


def _start_r(beside: Callable[[], object] | None) -> tuple[Any, BaseException | None]:
    """R started with this service's settings, and rpy2 running it; what ``beside`` raised."""
    _find_r_home()
    if not os.environ.get("R_HOME"):
        # R's start would end the process without it; rpy2 asks `R RHOME`
        try:
            import rpy2.situation as situation

            home = situation.get_r_home()
        except Exception:
            home = None
        if not home:
            raise RUnavailable("cannot find R: set R_HOME")
        os.environ["R_HOME"] = home
    # Not rpy2's initr_checkenv: that runs an `Rscript` to copy the R
    # front end's environment variables; embedded R reads
    # R_HOME/etc/Renviron itself. Nor its LD_LIBRARY_PATH, which it
    # prepends R's library path to: too late to matter for this process,
    # and every child inherits it (a pyenv Python started from here then
    # loaded Debian's libpython: 3.11.2 instead of 3.11.7).
    # R_DEFAULT_PACKAGES and R_ENABLE_JIT are read only while R starts;
    # restored, so that an Rscript started from here behaves as usual.
    # Without TZ, R asks timedatectl (absent in Lambda and containers)
    # and warns at start-up; Lambda itself sets TZ=:UTC.
    os.environ.setdefault("TZ", "UTC")
    saved = {name: os.environ.get(name) for name in ("R_DEFAULT_PACKAGES", "R_ENABLE_JIT")}
    os.environ.setdefault("R_DEFAULT_PACKAGES", DEFAULT_PACKAGES)
    os.environ.setdefault("R_ENABLE_JIT", JIT_LEVEL)
    for name in _SET_LATER:
        os.environ.setdefault(name, "")
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, START_SWITCH_INTERVAL_S))
    try:
        ri, beside_error = _initr(beside)
    except (ImportError, OSError, AttributeError) as exc:  # no libR.so, or no rpy2 for it
        raise RUnavailable(f"cannot load R: {exc}") from exc
    finally:
        sys.setswitchinterval(interval)
        # unsetenv moves no array and frees no string (glibc): a getenv
        # beside it is safe, and these names are not the ones a download reads
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return ri, beside_error


def started() -> bool:
    """True once R is up and the helpers are defined."""
    return _ri is not None


def reseed(seed: int) -> None:
    """``set.seed(seed)`` in R, so that environments restored from one snapshot draw differently."""
    start()
    with lock():
        _ri.baseenv["set.seed"](_ri.IntSexpVector([seed]))


def random_seed() -> list[int]:
    """R's ``.Random.seed`` (empty before R first draws or is seeded)."""
    start()
    with lock():
        try:
            seed = _ri.globalenv[".Random.seed"]
        except KeyError:
            return []
        values = [int(v) for v in seed]
        del seed  # released under the lock, not when this frame ends
    return values


def _error(exc: Exception) -> RError:
    """An RError from rpy2's exception: a refusal when serve.R meant one."""
    text = str(exc).strip()
    at = text.find(_REFUSAL)
    if at >= 0:
        message = text[at + len(_REFUSAL) :].strip()
        if message.startswith(_UNSUPPORTED):
            return RRefused(message[len(_UNSUPPORTED) :], unsupported=True)
        return RRefused(message)
    return RError(text)


def _plain_error(exc: Exception) -> RError:
    """R's message as it is (files other than serve.R mean nothing by a refusal marker)."""
    return RError(str(exc).strip())


def _r_call(fn: Any, *args: Any, errors: Callable[[Exception], RError] = _error) -> Any:
    """``fn(*args)`` in R (the caller holds the lock); R's error as an RError.

    A traceback keeps its frames' locals alive, R wrappers among them, until
    the exception is freed: by then the lock is long released. So the
    RRuntimeError's traceback is dropped here, the RError carries no
    context, and this frame's arguments are deleted before it is raised.
    """
    try:
        return fn(*args)
    except _ri.embedded.RRuntimeError as exc:
        exc.__traceback__ = None
        error = errors(exc)
    del fn, args
    raise error


def _call(name: str, *args: Any) -> Any:
    """Call one of serve.R's helpers; the caller holds the lock and drops the result under it."""
    start()
    with lock():
        return _r_call(_helpers[name], *args)


def versions() -> dict[str, str]:
    """R's and rpy2's version strings."""
    import rpy2

    start()
    with lock():
        out = _call("rl_version")
        r = str(out[0])
        del out
    return {"r": r, "rpy2": rpy2.__version__}


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
    """A fitted R object read into the session, with its scorer closure.

    Loading reads the file, loads the R packages the model needs (refusing
    it, by package name, when one is missing) and checks the scorer against
    R's own predict on a handful of rows (serve.R's rl_check), so that a
    model R cannot predict with, or that would be answered differently from
    R, fails here rather than on a request.
    """

    def __init__(self, path: str | os.PathLike[str], check: bool = True) -> None:
        start()
        self._scorer: Any = None
        self._interval: Any = None
        self._loaded: Any = None
        self.explain: dict[str, Any] = {}
        # kept: __del__ may run while the interpreter shuts down, when
        # lock()'s import no longer works
        self._lock = lock()
        with self._lock:
            loaded = explain = parts = None
            try:
                # check=False skips the comparison with R's own predict (benchmarks only)
                loaded = _call("rl_load", _ri.StrSexpVector([str(path)]), _ri.BoolSexpVector([check]))
                # rl_load returns list(description = ..., scorer = ..., explain = ...)
                self.description: dict[str, Any] = _py(loaded[0])
                self._scorer = loaded[1]
                # explain.R's part: example row and ranges (plain data) and the
                # interval closure, or NULL (an R helper set without explain.R).
                explain = loaded[2] if len(loaded) > 2 else _ri.NULL
                if explain is not _ri.NULL:
                    parts = dict(zip(explain.names, explain))
                    self.explain = {"example": _py(parts["example"]), "ranges": _py(parts["ranges"])}
                    if parts["interval"] is not _ri.NULL:
                        self._interval = parts["interval"]
                # kept whole for R code that scores through this model (batch.R)
                self._loaded = loaded
            finally:
                del loaded, explain, parts
        self.width = len(self.description.get("classes") or []) + 1 if self.kind == "multiclass" else 1

    @property
    def kind(self) -> str:
        """``binary``, ``multiclass``, ``label`` or ``regression``."""
        return str(self.description["kind"][0])

    def score(self, columns: Sequence[Column], n: int) -> list[float]:
        """The model's output for ``n`` rows, in one R call, as a flat list.

        ``columns`` follow the order of ``description["names"]``. For
        ``binary`` (P(second class)) and ``regression`` models: ``n`` values.
        For ``multiclass``: ``n * (K + 1)`` values, column-major, K class
        probabilities in ``description["classes"]`` order, then the 1-based
        index of the predicted class.
        For ``label``: ``n`` 1-based indices into ``description["classes"]``.
        """
        ri = _ri
        want = n * self.width
        with lock():
            cols = count = out = None
            try:
                cols = ri.ListSexpVector([_to_r(col) for col in columns])
                count = ri.IntSexpVector([n])
                out = self._call_scorer(cols, count)
                if not isinstance(out, ri.FloatSexpVector):
                    raise RError(f"predict returned an R {type(out).__name__}, not numbers")
                if len(out) != want:
                    raise RError(f"predict returned {len(out)} values for {n} rows, expected {want}")
                return _doubles_of(out, want)
            finally:
                del cols, count, out

    @property
    def has_interval(self) -> bool:
        """True when R can give a confidence interval for this model (lm, glm)."""
        return self._interval is not None

    def interval(self, columns: Sequence[Column], n: int, level: float) -> tuple[list[float], list[float]]:
        """Lower and upper bounds of the ``level`` confidence interval, from R (explain.R)."""
        ri = _ri
        with lock():
            cols = count = lvl = out = None
            try:
                cols = ri.ListSexpVector([_to_r(col) for col in columns])
                count = ri.IntSexpVector([n])
                lvl = ri.FloatSexpVector([level])
                try:
                    out = self._interval(cols, count, lvl)
                except ri.embedded.RRuntimeError as exc:
                    raise _error(exc) from exc
                if not isinstance(out, ri.FloatSexpVector) or len(out) != 2 * n:
                    raise RError(f"the interval gave {len(out)} values for {n} rows, expected {2 * n}")
                values = _doubles_of(out, 2 * n)
            finally:
                # R objects are released under the lock, like the scorer's
                del cols, count, lvl, out
        return values[:n], values[n:]

    def _call_scorer(self, *args: Any) -> Any:
        return _r_call(self._scorer, *args)

    def __del__(self) -> None:
        # The last holder of a swapped-out model may be any request thread:
        # the scorer (an R closure holding the fitted object) is let go
        # under the lock, wherever that happens.
        if any(getattr(self, name, None) is not None for name in ("_scorer", "_interval", "_loaded")):
            with self._lock:
                self._scorer = None
                self._interval = None
                self._loaded = None


def packages(path: str | os.PathLike[str], recursive: bool = False) -> list[str]:
    """The non-base R packages a model file needs (with their dependencies if ``recursive``)."""
    start()
    with lock():
        fit = out = None
        try:
            fit = _call("rl_read", _ri.StrSexpVector([str(path)]))
            out = _call("rl_packages", fit, _ri.BoolSexpVector([recursive]))
            return [str(p) for p in out]
        finally:
            del fit, out


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
    if isinstance(col, Integer):
        return ri.IntSexpVector.from_memoryview(memoryview(_ints(col.values)))
    if isinstance(col, Logical):
        return ri.BoolSexpVector(list(col.values))
    return ri.StrSexpVector(list(col.values))


def _doubles(values: Sequence[float]) -> array:
    return values if isinstance(values, array) and values.typecode == "d" else array("d", values)


def _ints(values: Sequence[int]) -> array:
    return values if isinstance(values, array) and values.typecode == "i" else array("i", values)


_files: dict[str, Any] = {}


def collect_garbage(full: bool = False) -> None:
    """Run R's garbage collector now: the young generation, or with ``full`` every generation.

    R collects lazily and grows its heap meanwhile: a batch job scoring
    chunk after chunk kept about 12 MB per 100,000 rows until R's heap
    settled near 170 MB. Collecting after each chunk keeps it flat. A young
    collection (a few ms) frees what the chunk made since R's last automatic
    collection; what an automatic collection in the middle of a chunk
    promoted to an older generation (the chunk's strings, still in use then)
    waits for a full one (about 30 ms on 2 cores shared with other work), so
    batch.py asks for one every few chunks (bench/bench_batch.py: with young
    ones only, the peak grew from 171 MB at 1M rows to 196 MB at 4M; with a
    full one every third chunk it stayed at 149-152 MB).
    """
    start()
    with lock():
        _ri.baseenv["gc"](False, False, full)  # verbose, reset, full


Arg = Union[str, int, float, bool, None, RModel, Sequence[str], Sequence[int]]


def call_file(path: str | os.PathLike[str], function: str, *args: Arg, refusals: bool = False) -> Any:
    """Call ``function`` defined in the R file at ``path``.

    The file (our own code, shipped in the package) is evaluated once into an
    environment of its own. With ``refusals``, an error whose message carries
    serve.R's refusal marker (``[rlambda] ...``, e.g. batch.R's missing
    data.table) comes back as :class:`RRefused`; otherwise R's message is
    kept as it is, in an :class:`RError`.
    Arguments become R values, never R code: scalars, ``None`` (NULL), lists
    of strings or of ints (vectors), or an :class:`RModel` (its
    ``list(description, scorer)``). The result comes back as Python lists
    and dicts.
    """
    start()
    ri = _ri
    errors = _error if refusals else _plain_error
    with lock():
        env = fn = result = None
        r_args: list[Any] = []
        try:
            key = str(path)
            env = _files.get(key)
            if env is None:
                env = ri.baseenv["new.env"]()
                with open(path, encoding="utf-8") as fh:
                    source = fh.read()
                _r_call(lambda: ri.evalr(source, envir=env), errors=errors)
                _files[key] = env
            r_args.extend(_arg(arg) for arg in args)
            fn = env[function]
            result = _r_call(fn, *r_args, errors=errors)
            return _py(result)
        finally:
            del env, fn, result, r_args


def _arg(arg: Arg) -> Any:
    """One call_file argument as an R value (the caller holds the lock)."""
    ri = _ri
    if arg is None:
        return ri.NULL
    if isinstance(arg, RModel):
        return arg._loaded
    if isinstance(arg, bool):
        return ri.BoolSexpVector([arg])
    if isinstance(arg, int):
        return ri.IntSexpVector([arg])
    if isinstance(arg, float):
        return ri.FloatSexpVector([arg])
    if isinstance(arg, str):
        return ri.StrSexpVector([arg])
    if isinstance(arg, array) and arg.typecode == "i":
        return ri.IntSexpVector.from_memoryview(memoryview(arg))
    values = list(arg)
    if values and all(type(v) is int for v in values):
        return ri.IntSexpVector.from_memoryview(memoryview(_ints(values)))
    return ri.StrSexpVector([str(v) for v in values])
