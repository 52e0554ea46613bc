"""Lambda SnapStart runtime hooks: what to do before the snapshot and after each restore.

With SnapStart, Lambda runs the init once when a version is published,
snapshots the memory (embedded R and the loaded model included, and /tmp),
and resumes every new execution environment from that snapshot. Before the
snapshot the app is primed (R started, model loaded, one row scored); after
each restore, what must not be shared between environments is renewed:
random number generators (R's and Python's), the boto3 session and clients
(their connections are dead and their credentials those of the environment
that took the snapshot), and a versioned model's pointer (time has passed).

The hooks are registered with ``snapshot_restore_py``, which Lambda's Python
managed runtimes include; where it is absent (``make serve``, a plain
process) registering is a no-op. A hook never raises: a failed step is
logged, and the app is left whole (no model rather than a half-loaded one),
so the first request loads what is missing and reports what still fails.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any, Callable

from . import rsession

log = logging.getLogger(__name__)


def _step(name: str, action: Callable[[], Any]) -> bool:
    try:
        action()
        return True
    except Exception as exc:
        log.exception("SnapStart hook step failed", extra={"step": name, "reason": str(exc)})
        return False


def _reseed() -> None:
    random.seed()  # from os.urandom
    if rsession.started():
        rsession.reseed(int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF)


def before_snapshot(app: Any) -> None:
    """Prime the app: R started, the model loaded, one made-up row scored."""
    _step("prime", app.prime)


def after_restore(app: Any) -> None:
    """Renew what a snapshot must not share; each step runs even if another failed."""
    _step("reseed", _reseed)
    _step("new S3 clients", app.store.reset_clients)
    _step("re-read the model pointer", app.reread_pointer)


def register(app: Any) -> bool:
    """Register the hooks for ``app``; False when snapshot_restore_py is not installed."""
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:
        return False
    register_before_snapshot(before_snapshot, app)
    register_after_restore(after_restore, app)
    return True
