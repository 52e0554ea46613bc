"""Concurrency: 64 clients at once get correct answers, and R is never entered from two threads.

The check on R is a guard wrapped around every place rlambda.rsession calls
into R (the scorer, vector construction, reading results, the helper
calls) and around rpy2's own protect and release of R objects
(``_rinterface_capi._preserve`` / ``_release``, which call R_PreserveObject
and R_ReleaseObject when a Python wrapper is made or freed, on whatever
thread frees it): each entry records whether the calling thread holds R's
lock and whether another thread is inside R at that moment. The guard is
shown to catch an unlocked entry, so a pass means something.
"""

from __future__ import annotations

import json
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from conftest import LambdaContext
from test_local_server import LocalServer

CLIENTS = 64


class RGuard:
    """Records entries into R: overlapping threads and entries without R's lock."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._depth: dict[int, int] = {}
        self.entries = 0
        self.counts: dict[str, int] = {}
        self.overlaps: list[str] = []
        self.unlocked: list[str] = []

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with the check around it."""
        from rlambda import rsession

        def guarded(*args: Any, **kwargs: Any) -> Any:
            me = threading.get_ident()
            with self._mutex:
                self.entries += 1
                self.counts[name] = self.counts.get(name, 0) + 1
                if not rsession.lock()._is_owned():
                    self.unlocked.append(name)
                others = [t for t, d in self._depth.items() if d and t != me]
                if others:
                    self.overlaps.append(name)
                self._depth[me] = self._depth.get(me, 0) + 1
            try:
                return fn(*args, **kwargs)
            finally:
                with self._mutex:
                    self._depth[me] -= 1

        return guarded


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> RGuard:
    """The guard installed on every R entry point of rlambda.rsession."""
    from rlambda import rsession

    from rpy2.rinterface_lib import _rinterface_capi

    g = RGuard()
    for name in ("_call", "_to_r", "_doubles_of"):
        monkeypatch.setattr(rsession, name, g.wrap(name, getattr(rsession, name)))
    monkeypatch.setattr(rsession.RModel, "_call_scorer", g.wrap("_call_scorer", rsession.RModel._call_scorer))
    # rpy2's capsules look these up as module globals when a wrapper is made or freed.
    for name in ("_preserve", "_release"):
        monkeypatch.setattr(_rinterface_capi, name, g.wrap(name, getattr(_rinterface_capi, name)))
    return g


def test_guard_catches_an_unlocked_entry(guard: RGuard) -> None:
    """The check can fail: two threads entering a guarded call without the lock are reported."""
    from rlambda import rsession

    barrier = threading.Barrier(2, timeout=10)
    inside = guard.wrap("probe", lambda: barrier.wait())  # both threads inside at once
    threads = [threading.Thread(target=inside) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert guard.unlocked == ["probe", "probe"] and guard.overlaps == ["probe"]
    with rsession.lock():
        guard.wrap("locked", lambda: None)()
    assert guard.unlocked == ["probe", "probe"]


def rows(n: int) -> list[dict[str, Any]]:
    """n distinct applicants."""
    return [{"gre": 220 + (i * 37) % 580, "gpa": round(2.0 + (i * 0.07) % 2.0, 2), "rank": 1 + i % 4} for i in range(n)]


def rest_post(body: Any) -> dict[str, Any]:
    return {
        "httpMethod": "POST",
        "path": "/predict",
        "requestContext": {"stage": "prod"},
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def test_64_threads_in_one_process(make_app: Callable[..., Any], guard: RGuard) -> None:
    # GIVEN one warm App and the expected answer for each of 64 clients' rows, computed one at a time
    app = make_app()
    work = rows(CLIENTS * 4)
    expected = [app.handle(r, LambdaContext())["probability"] for r in work]
    batch_expected = app.handle({"instances": work[:40]}, LambdaContext())["predictions"]
    barrier = threading.Barrier(CLIENTS, timeout=60)

    def client(n: int) -> list[str]:
        wrong = []
        barrier.wait()  # all 64 start at once
        for i in range(n, len(work), CLIENTS):
            direct = app.handle(work[i], LambdaContext())
            over_api = json.loads(app.handle(rest_post(work[i]), LambdaContext())["body"])
            if direct["probability"] != expected[i] or over_api["probability"] != expected[i]:
                wrong.append(f"row {i}: {direct['probability']} / {over_api['probability']} != {expected[i]}")
        if n % 8 == 0:
            if app.handle({"instances": work[:40]}, LambdaContext())["predictions"] != batch_expected:
                wrong.append(f"client {n}: batch differs")
        return wrong

    # WHEN 64 threads score at the same moment
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(client, range(CLIENTS), timeout=120))
    # THEN every answer is the one-at-a-time answer, and R was entered by one thread at a time, under its lock
    assert [w for ws in results for w in ws] == []
    assert guard.entries >= 2 * len(work)
    # every R object made for these requests was also let go, each time under the lock
    assert guard.counts["_release"] >= 2 * len(work)
    assert guard.overlaps == [] and guard.unlocked == []


def test_64_threads_while_a_new_version_is_swapped_in(model_path: Path, second_model: Path, tmp_path: Path,
                                                       guard: RGuard) -> None:
    from rlambda.app import App
    from rlambda.blobs import DirBlobs
    from rlambda.registry import Registry, publish_file
    from rlambda.settings import Settings

    # GIVEN a versioned folder serving v1, its pointer re-read on every request
    folder = tmp_path / "models"
    registry = Registry(DirBlobs(folder), "")
    v1 = publish_file(registry, str(model_path)).version
    app = App(Settings(model_uri=str(folder) + "/", cache_dir=str(tmp_path / "cache"), refresh_s=0))
    work = rows(CLIENTS)
    expected = [app.handle(r, LambdaContext())["probability"] for r in work]
    old = weakref.ref(app.model()._r)
    barrier = threading.Barrier(CLIENTS + 1, timeout=60)

    def client(n: int) -> list[tuple[str, bool]]:
        seen = []
        barrier.wait()
        for _ in range(20):  # bounded: 20 requests per client
            answer = app.handle(work[n], LambdaContext())
            seen.append((answer["model"]["version"], answer["probability"] == expected[n]))
        return seen

    # WHEN v2 is promoted while 64 threads score
    with ThreadPoolExecutor(CLIENTS + 1) as pool:
        futures = [pool.submit(client, n) for n in range(CLIENTS)]
        barrier.wait()
        v2 = publish_file(registry, str(second_model)).version
        seen = [s for f in futures for s in f.result(timeout=120)]
    # THEN every answer is right and names one of the two versions; afterwards all answer v2
    assert all(ok for _, ok in seen)
    assert {v for v, _ in seen} <= {v1, v2}
    assert app.handle(work[0], LambdaContext())["model"]["version"] == v2
    # AND the swapped-out model's R objects are gone, let go under the lock by its last user
    assert old() is None
    assert guard.overlaps == [] and guard.unlocked == []


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    srv = LocalServer(model_path, tmp_path_factory.mktemp("concurrency-local"), "--quiet")
    yield srv
    srv.stop()


def test_64_http_clients_at_once(server: LocalServer, make_app: Callable[..., Any]) -> None:
    # GIVEN the expected answers from an App in this process (same model file)
    app = make_app()
    work = rows(CLIENTS * 3)
    expected = [app.handle(r, LambdaContext())["probability"] for r in work]
    barrier = threading.Barrier(CLIENTS, timeout=60)

    def client(n: int) -> list[str]:
        conn = server.connection()  # keep-alive: 3 requests on one connection
        wrong = []
        try:
            conn.connect()
            barrier.wait()  # 64 open connections, then all send at once
            for i in range(n, len(work), CLIENTS):
                conn.request("POST", "/predict", body=json.dumps(work[i]), headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                doc = json.loads(resp.read())
                if resp.status != 200 or doc["probability"] != expected[i]:
                    wrong.append(f"row {i}: {resp.status} {doc}")
        finally:
            conn.close()
        return wrong

    # WHEN 64 clients send at the same moment THEN each gets its own right answer
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(client, range(CLIENTS), timeout=120))
    assert [w for ws in results for w in ws] == []
    assert server.proc.poll() is None


def test_an_r_error_lets_go_of_its_objects_under_the_lock(tmp_path: Path, guard: RGuard) -> None:
    """The error path too: the objects of a failed R call are not kept alive past the lock by a traceback."""
    from rlambda import rsession

    # GIVEN an R function that fails after its arguments became R objects
    script = tmp_path / "fails.R"
    script.write_text('fails <- function(x, y) stop("no: ", x)\n')
    released = guard.counts.get("_release", 0)
    # WHEN 64 threads call it at once and each catches the error
    def call(i: int) -> str:
        try:
            rsession.call_file(script, "fails", f"row {i}", i)
        except rsession.RError as exc:
            return str(exc)
        return "no error"

    with ThreadPoolExecutor(CLIENTS) as pool:
        messages = list(pool.map(call, range(CLIENTS), timeout=120))
    # THEN each saw R's message, and every release happened under the lock
    assert all(f"no: row {i}" in m for i, m in enumerate(messages))
    assert guard.counts.get("_release", 0) - released >= 2 * CLIENTS
    assert guard.overlaps == [] and guard.unlocked == []
