"""SnapStart runtime hooks, called as Lambda's runtime calls them.

Lambda's Python runtime (awslambdaric) runs the before-snapshot hooks by
popping snapshot_restore_py's list (the reverse of registration) and the
after-restore hooks in registration order; ``run_before_snapshot`` and
``run_after_restore`` below do the same. S3 is moto (in-process), R is real.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Iterator

import pytest
import snapshot_restore_py

from conftest import LambdaContext, load_event
from rlambda import rsession, snapstart
from rlambda.app import App
from rlambda.blobs import S3Blobs
from rlambda.model import Model
from rlambda.registry import Registry, publish_file
from rlambda.settings import Settings

BUCKET = "snapstart-models"
FOLDER = f"s3://{BUCKET}/models/admission/"


def run_before_snapshot() -> None:
    """As the runtime does: pop the registered hooks, last registered first."""
    hooks = snapshot_restore_py.get_before_snapshot()
    while hooks:
        func, args, kwargs = hooks.pop()
        func(*args, **kwargs)


def run_after_restore() -> None:
    """As the runtime does: in registration order."""
    for func, args, kwargs in snapshot_restore_py.get_after_restore():
        func(*args, **kwargs)


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty hook registries for this test (handler.py's own hooks stay out of it)."""
    monkeypatch.setattr(snapshot_restore_py, "_before_snapshot_registry", [])
    monkeypatch.setattr(snapshot_restore_py, "_after_restore_registry", [])


@pytest.fixture
def registry(s3: Any) -> Registry:
    """A versioned model folder in moto's S3."""
    s3.create_bucket(Bucket=BUCKET)
    return Registry(S3Blobs(s3, BUCKET), "models/admission/")


@pytest.fixture
def app(registry: Registry, model_path: Path, tmp_path: Path, hooks: None) -> Iterator[App]:
    """An app on the versioned folder, v1 published, its hooks registered; the store makes its own clients."""
    publish_file(registry, str(model_path))
    built = App(Settings(model_uri=FOLDER, cache_dir=str(tmp_path / "tmp")))
    assert snapstart.register(built)
    yield built


def ask(app: App) -> tuple[int, dict[str, Any]]:
    import json

    answer = app.handle(load_event("apigw_rest_get_predict.json"), LambdaContext())
    return answer["statusCode"], json.loads(answer["body"])


def test_handler_registers_its_hooks_at_import() -> None:
    import handler

    assert (snapstart.before_snapshot, (handler.app,), {}) in snapshot_restore_py.get_before_snapshot()
    assert (snapstart.after_restore, (handler.app,), {}) in snapshot_restore_py.get_after_restore()


def test_hooks_run_in_the_runtimes_order(app: App) -> None:
    # GIVEN hooks registered around the app's own
    seen: list[str] = []
    snapshot_restore_py.register_before_snapshot(lambda: seen.append(f"last before, model {app._model is not None}"))
    snapshot_restore_py.register_after_restore(lambda: seen.append("last after"))
    # WHEN the runtime snapshots THEN the last registered runs first, before the app is primed
    run_before_snapshot()
    assert seen == ["last before, model False"] and app._model is not None
    assert snapshot_restore_py.get_before_snapshot() == []  # popped, as the runtime does
    # WHEN it restores THEN the app's hook runs first, in registration order
    run_after_restore()
    assert seen[-1] == "last after"


def test_snapshot_holds_a_primed_app_and_each_restore_renews_what_must_not_be_shared(
        app: App, registry: Registry, second_model: Path) -> None:
    # GIVEN the before-snapshot hook has run (the snapshot's state)
    run_before_snapshot()
    assert rsession.started()
    model = app._model
    assert model is not None and model.source.version == registry.pointer().version
    client_at_snapshot = app.store.s3
    python_state = random.getstate()
    # AND a new version promoted while the snapshot sat in the cache
    v2 = publish_file(registry, str(second_model)).version
    # WHEN an environment is restored
    run_after_restore()
    seed_1 = rsession.random_seed()
    # THEN R and Python are reseeded, the S3 client is a new one, and the pointer was re-read
    assert seed_1 and random.getstate() != python_state
    assert app.store.s3 is not client_at_snapshot
    assert app._model is not None and app._model.source.version == v2
    status, body = ask(app)
    assert status == 200 and body["result"] is True and body["model"]["version"] == v2
    # WHEN another environment is restored from the same snapshot THEN it draws differently
    client_1 = app.store.s3
    run_after_restore()
    seed_2 = rsession.random_seed()
    assert seed_2 and seed_2 != seed_1
    assert app.store.s3 is not client_1
    assert ask(app)[0] == 200


def test_a_failed_before_snapshot_is_logged_and_leaves_no_model(
        s3: Any, model_path: Path, tmp_path: Path, hooks: None, caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a MODEL_URI whose object does not exist yet
    s3.create_bucket(Bucket=BUCKET)
    app = App(Settings(model_uri=f"s3://{BUCKET}/admission.rds", cache_dir=str(tmp_path / "tmp")))
    snapstart.register(app)
    # WHEN the before-snapshot hook runs THEN it does not raise, logs why, and keeps no model
    with caplog.at_level(logging.ERROR):
        run_before_snapshot()
    assert app._model is None
    assert any(getattr(r, "step", None) == "prime" for r in caplog.records)
    # WHEN the model is uploaded THEN the restored app loads it on the first request
    s3.upload_file(str(model_path), BUCKET, "admission.rds")
    run_after_restore()
    assert ask(app)[0] == 200


def test_a_scorer_that_fails_its_first_row_is_not_kept(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a model whose predict fails
    def broken(self: Model, rows: Any, prefix: Any = None) -> Any:
        raise RuntimeError("R fell over")

    monkeypatch.setattr(Model, "predict", broken)
    # WHEN the app is primed before the snapshot THEN the loaded model is dropped
    run_before_snapshot()
    assert app._model is None
    # and once predict works again the app serves
    monkeypatch.undo()
    assert ask(app)[0] == 200


def test_a_failed_restore_step_does_not_stop_the_others(app: App, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a primed app, and R's reseeding failing
    run_before_snapshot()
    client = app.store.s3

    def fail(seed: int) -> None:
        raise RuntimeError("no R")

    monkeypatch.setattr(rsession, "reseed", fail)
    # WHEN restored THEN the failure is logged and the clients are still renewed
    with caplog.at_level(logging.ERROR):
        run_after_restore()
    assert [getattr(r, "step", None) for r in caplog.records if r.levelno >= logging.ERROR] == ["reseed"]
    assert app.store.s3 is not client
    assert ask(app)[0] == 200


def test_register_is_a_no_op_without_the_library(monkeypatch: pytest.MonkeyPatch, hooks: None) -> None:
    # GIVEN a Python without snapshot_restore_py (make serve outside Lambda)
    import builtins

    real_import = builtins.__import__

    def no_library(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "snapshot_restore_py":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_library)
    # THEN registering says so and registers nothing
    assert snapstart.register(object()) is False
    assert snapshot_restore_py.get_before_snapshot() == []
