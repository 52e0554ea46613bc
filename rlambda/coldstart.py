"""Lambda's init with its parts side by side: R starts on this thread while others import rpy2 and the
service and download the model.

A cold start was four things in a row: importing the service (about 60 ms
of Python here, two thirds of it the standard library: json, logging,
dataclasses, tempfile...), importing rpy2 (about 25 ms), starting R (about
55 ms), downloading the model and reading it in (about 15 ms). R must start
on the main thread (its C stack is measured from the thread that starts
it), and most of its start is C code that lets go of Python's GIL, so this
module imports only ``rsession`` (and the C extensions, see EXTENSIONS)
before starting R from rpy2's compiled module. Once R's start has set its
environment variables (rsession._initr), one thread imports the rest of
rpy2 (which then takes R over) and a helper imports the rest of the
service, makes the App and begins the model's download, all beside the long
part of R's start. ``bench/bench_coldstart.py`` prints the phases.

Like :meth:`App.warm_up`, which finishes the init, it never raises for a
model that cannot be fetched or loaded, or an R that does not start: those
are reported by the first request. A failure to import the service itself
(a packaging bug) is raised, as the import of handler.py would raise it.
"""

from __future__ import annotations

import importlib
import threading
import time
from typing import TYPE_CHECKING, Any

from . import rsession

if TYPE_CHECKING:
    from .app import App


# C extensions that rpy2 and the service's modules load, imported on the main
# thread before R starts. R's start moves the environment array while it adds
# its variables, which crashed a getenv on another thread once in CI
# (rsession._initr); the threads beside it start only after that part, and
# the extensions are imported before it anyway, so that nothing an
# extension's initialisation does (OpenSSL reads OPENSSL_CONF) can meet any
# other part of R's start either. The threads import pure Python
# (tests/test_coldstart.py checks it). The extension modules themselves
# (their Python wrappers, ssl.py or json/, are left to the helper: 7 ms here
# against 15-20 ms for both; importing them beside R's start instead measured
# no faster, the Python beside it being as long as R's start now); names of
# CPython 3.11 and 3.12, those a version lacks are skipped.
EXTENSIONS = ("_bisect", "_blake2", "_bz2", "_contextvars", "_csv", "_datetime", "_hashlib", "_json", "_lzma",
              "_opcode", "_posixsubprocess", "_random", "_sha2", "_sha512", "_socket", "_ssl", "_struct", "_typing",
              "_uuid", "array", "binascii", "fcntl", "math", "select", "zlib")


def init() -> App:
    """The service, with R started and (where it could be fetched and read) the model loaded."""
    started = time.perf_counter()
    done: dict[str, Any] = {}
    beside = threading.Thread(target=_import, args=(done,), name="rlambda-init", daemon=True)
    r_error: Exception | None = None
    for name in EXTENSIONS:
        try:
            importlib.import_module(name)
        except ImportError:  # another CPython's name
            pass
    try:
        # the helper starts from inside R's start, once R's environment is
        # final, as does the import of rpy2's Python (rsession._initr)
        rsession.start(beside=beside.start)
    except Exception as exc:  # App.warm_up tries again and logs it; the first request reports it
        r_error = exc
    r_start_ms = (time.perf_counter() - started) * 1e3
    if beside.ident is None:  # R failed before that point
        beside.start()
    beside.join()
    if "error" in done:
        raise done["error"]
    app: App = done["app"]
    app.init_phases["imports_ms"] = done["imports_ms"]  # beside R's start
    if r_error is None:
        app.init_phases["r_start_ms"] = round(r_start_ms, 2)
    app.warm_up(started)  # waits for the download, then reads the model into R
    return app


def _import(done: dict[str, Any]) -> None:
    """The helper thread: the rest of the service, imported (pure Python) and made, and the model's
    download begun, while R starts."""
    started = time.perf_counter()
    try:
        import http.client  # noqa: F401 - the model's GET (s3reader) needs it next

        from . import logs
        from .app import App

        logs.configure()
        app = App()
        done["imports_ms"] = round((time.perf_counter() - started) * 1e3, 2)
        app.prefetch()  # a thread of its own: the init's wait for it is bounded (App.warm_up)
        done["app"] = app
    except BaseException as exc:  # raised again on the main thread
        done["error"] = exc
    done.setdefault("imports_ms", round((time.perf_counter() - started) * 1e3, 2))
