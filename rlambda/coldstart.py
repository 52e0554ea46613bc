"""Lambda's init with its parts side by side: R starts on this thread while another imports the service.

A cold start was three things in a row: importing the service (about 60 ms
of Python here, two thirds of it the standard library: json, logging,
dataclasses, tempfile...), starting R (about 80 ms), and reading the model
in (about 15 ms). R must start on the main thread (its C stack is measured
from the thread that starts it), and most of its start is C code that lets
go of Python's GIL, so this module imports only ``rsession`` (and the C
extensions, see EXTENSIONS) before starting R, and a helper thread imports
the rest of the service meanwhile. The model's download starts once R is
up. ``bench/bench_coldstart.py`` prints the phases.

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


# C extensions the service's modules load. Imported on the main thread before
# the helper thread starts: an extension's initialisation may read the
# process environment (OpenSSL reads OPENSSL_CONF, the resolver RES_OPTIONS),
# and R's start adds about 26 variables to it (its Renviron, R_SESSION_TMPDIR)
# while the helper runs. glibc's setenv moves the environment array as it
# grows, so a getenv on another thread at that moment reads freed memory: a
# general protection fault in libc, seen once in CI. The helper then imports
# pure Python only (tests/test_coldstart.py checks it), and the model's
# download, which resolves names and opens sockets, starts once R is up.
# The extension modules themselves (their Python wrappers, ssl.py or
# json/, are left to the helper: 7 ms here against 15-20 ms for both);
# names of CPython 3.11 and 3.12, those a version lacks are skipped.
EXTENSIONS = ("_bisect", "_blake2", "_bz2", "_contextvars", "_datetime", "_hashlib", "_json", "_lzma", "_opcode",
              "_random", "_sha2", "_sha512", "_socket", "_ssl", "_struct", "_typing", "_uuid", "array", "binascii",
              "math", "select", "zlib")


def init() -> App:
    """The service, with R started and (where it could be fetched and read) the model loaded."""
    started = time.perf_counter()
    done: dict[str, Any] = {}
    beside = threading.Thread(target=_import, args=(done,), name="rlambda-init", daemon=True)
    r_error: Exception | None = None
    try:
        # rpy2's import is Python too: done before the helper thread competes for the GIL
        rsession.prepare()
    except Exception as exc:  # App.warm_up tries again and logs it; the first request reports it
        r_error = exc
    for name in EXTENSIONS:
        try:
            importlib.import_module(name)
        except ImportError:  # another CPython's name
            pass
    beside.start()
    if r_error is None:
        try:
            rsession.start()
        except Exception as exc:
            r_error = exc
    r_start_ms = (time.perf_counter() - started) * 1e3
    beside.join()
    if "error" in done:
        raise done["error"]
    app: App = done["app"]
    app.init_phases["imports_ms"] = done["imports_ms"]  # beside R's start
    if r_error is None:
        app.init_phases["r_start_ms"] = round(r_start_ms, 2)
    app.warm_up(started)  # R is up: the download, then the model read into R
    return app


def _import(done: dict[str, Any]) -> None:
    """The helper thread: the rest of the service, imported (pure Python) and made, while R starts."""
    started = time.perf_counter()
    try:
        import http.client  # noqa: F401 - the model's GET (s3reader) needs it next

        from . import logs
        from .app import App

        logs.configure()
        done["app"] = App()
    except BaseException as exc:  # raised again on the main thread
        done["error"] = exc
    done["imports_ms"] = round((time.perf_counter() - started) * 1e3, 2)
