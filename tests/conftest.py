"""Shared fixtures: the built model, event fixtures, a Lambda context, S3 by moto."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
EVENTS = Path(__file__).resolve().parent / "events"
MODEL = ROOT / "models" / "admission.rds"
sys.path.insert(0, str(ROOT))

# handler.py builds its app from the environment at import, and whichever
# test imports it first fixes that for the session: make it the local model,
# with a cache of its own, and never a real AWS endpoint.
os.environ["MODEL_URI"] = str(MODEL)
os.environ["MODEL_CACHE_DIR"] = tempfile.mkdtemp(prefix="rlambda-test-cache-")
os.environ.pop("AWS_ENDPOINT_URL", None)


@dataclass
class LambdaContext:
    """The attributes the Python runtime's context object has."""

    function_name: str = "admission"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:admission"
    memory_limit_in_mb: int = 1024
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/admission"
    log_stream_name: str = "2026/11/26/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def load_event(name: str) -> dict[str, Any]:
    """A JSON event fixture from tests/events."""
    return json.loads((EVENTS / name).read_text())


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The example model, built by models/train.R if missing."""
    if not MODEL.exists():
        subprocess.run(["Rscript", str(ROOT / "models" / "train.R"), "--out", str(MODEL)], check=True)
    return MODEL


@pytest.fixture(scope="module")
def second_model(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same fit saved with xz compression: a distinct file (and version), the same answers."""
    out = tmp_path_factory.mktemp("second") / "admission-xz.rds"
    subprocess.run(["Rscript", "-e", f'saveRDS(readRDS("{model_path}"), "{out}", compress = "xz")'],
                   check=True, capture_output=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``python -m rlambda.local`` on a free port, serving the example model (tests/localserver.py)."""
    from localserver import LocalServer

    srv = LocalServer(model_path, tmp_path_factory.mktemp("local"))
    yield srv
    srv.stop()


@pytest.fixture
def context() -> LambdaContext:
    """A fresh Lambda context with its own request id."""
    return LambdaContext()


@pytest.fixture
def event() -> Callable[[str], dict[str, Any]]:
    """Loader of event fixtures by file name."""
    return load_event


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and no real endpoint, so nothing can reach AWS."""
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_SESSION_TOKEN", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        # moto's mock_aws patches botocore; the cold start's own reader would go to the network
        ("S3_READER", "off"),
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def s3(aws_env: None) -> Iterator[Any]:
    """An in-process moto S3 client (us-east-1)."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        yield boto3.client("s3", region_name="us-east-1")


@pytest.fixture
def make_app(model_path: Path, tmp_path: Path) -> Callable[..., Any]:
    """Build an App with settings overrides; the model defaults to the local file."""
    from rlambda.app import App
    from rlambda.settings import Settings

    def build(**overrides: Any) -> App:
        settings = dict(model_uri=str(model_path), cache_dir=str(tmp_path / "cache"))
        settings.update(overrides)
        return App(Settings(**settings))

    return build
