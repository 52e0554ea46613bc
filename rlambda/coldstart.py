"""Lambda's init with its parts side by side: R starts on this thread while another imports and downloads.

A cold start was three things in a row: importing the service (about 60 ms
of Python here, two thirds of it the standard library: json, logging,
dataclasses, tempfile...), starting R (about 80 ms), and reading the model
in (about 15 ms), with the download already beside R's start. R must start
on the main thread (its C stack is measured from the thread that starts
it), and most of its start is C code that lets go of Python's GIL, so this
module imports only ``rsession`` before starting R, and a helper thread
meanwhile imports the rest of the service and starts the model's download
as soon as the store can. ``bench/bench_coldstart.py`` prints the phases.

Like :meth:`App.warm_up`, which finishes the init, it never raises for a
model that cannot be fetched or loaded, or an R that does not start: those
are reported by the first request. A failure to import the service itself
(a packaging bug) is raised, as the import of handler.py would raise it.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from . import rsession

if TYPE_CHECKING:
    from .app import App


def init() -> App:
    """The service, with R started and (where it could be fetched and read) the model loaded."""
    started = time.perf_counter()
    done: dict[str, Any] = {}
    beside = threading.Thread(target=_import_and_fetch, args=(done,), name="rlambda-init", daemon=True)
    r_error: Exception | None = None
    try:
        # rpy2's import is Python too: done before the helper thread competes for the GIL
        rsession.prepare()
    except Exception as exc:  # App.warm_up tries again and logs it; the first request reports it
        r_error = exc
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
    app.warm_up(started)
    return app


def _import_and_fetch(done: dict[str, Any]) -> None:
    """The helper thread: the store first (to start the download), then the rest of the service."""
    started = time.perf_counter()
    try:
        from . import logs
        from .settings import Settings
        from .store import Prefetch, Store

        logs.configure()
        settings = Settings.from_env()
        store = Store(settings.cache_dir)
        fetch = Prefetch(lambda: store.fetch(settings.model_uri))
        from .app import App

        done["app"] = App(settings, store, prefetch=fetch)
    except BaseException as exc:  # raised again on the main thread
        done["error"] = exc
    done["imports_ms"] = round((time.perf_counter() - started) * 1e3, 2)
