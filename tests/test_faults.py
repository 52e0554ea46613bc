"""Faults in S3 and /tmp: a clear 5xx, nothing half-written, the last good model kept, recovery without restart.

S3 is moto's server on 127.0.0.1 behind tests/faultproxy.py, which a test
switches on and off: the code under test keeps one boto3 client and one
endpoint throughout, so "recovers once the fault clears" means the very same
App answering again, with no restart. Clients use small timeouts and no
retries so the slow and down cases stay short.

Two situations per fault:

* a fresh container (single-file MODEL_URI, no model loaded yet): the answer
  is the fault's 5xx (503 with Retry-After where retrying helps), then 200
  once the fault clears;
* a serving container (versioned folder, MODEL_REFRESH_S=0 so every request
  re-reads the pointer): a new version is promoted while the fault is on;
  the previous version keeps answering, and the new one is served once the
  fault clears.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from conftest import LambdaContext, load_event
from faultproxy import FaultProxy
from rlambda.app import App
from rlambda.blobs import S3Blobs
from rlambda.registry import Registry, publish_file
from rlambda.settings import Settings
from rlambda.store import Store

GARBAGE = b"X\n" + b"this is not an R serialization" * 100


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[tuple[str, int]]:
    """moto's S3 server on 127.0.0.1, any free port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    yield server.get_host_and_port()
    server.stop()


@pytest.fixture(scope="module")
def proxy(moto_endpoint: tuple[str, int]) -> Iterator[FaultProxy]:
    """The fault proxy in front of moto."""
    p = FaultProxy(moto_endpoint)
    yield p
    p.close()


def client(endpoint: str) -> Any:
    """A boto3 S3 client; small timeouts and one attempt keep each fault short."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(connect_timeout=0.5, read_timeout=0.5, retries={"max_attempts": 1, "mode": "standard"},
                      s3={"addressing_style": "path"}),
    )


class TmpFull:
    """A 128 KiB tmpfs as the cache directory, filled on demand (the container's /tmp running out).

    128 KiB holds two versions of the 43 KB model: the served one and the
    one being downloaded.
    """

    def __init__(self, where: Path) -> None:
        self.root = where
        self.root.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(where)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs to fill (needs root): {done.stderr.strip()}")
        self.filler = self.root / "filler"

    def fill(self, leave_bytes: int = 0) -> None:
        """Fill the file system, leaving ``leave_bytes`` (rounded down to pages) free."""
        stat = os.statvfs(self.root)
        free = stat.f_bavail * stat.f_frsize
        with open(self.filler, "ab") as fh:
            fh.write(b"\0" * max(0, free - leave_bytes))

    def free(self) -> None:
        """The fault clears: space is freed."""
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.root)], capture_output=True)


@dataclass
class World:
    """One test's bucket, cache and apps, all through the proxy."""

    admin: Any  # straight to moto: setting up is not under test
    proxy: FaultProxy
    bucket: str
    cache: Path
    model: Path
    second: Path
    tmpfs: TmpFull | None = None

    def app(self, uri: str, refresh_s: float = 60.0, endpoint: str | None = None) -> App:
        settings = Settings(model_uri=uri, cache_dir=str(self.cache), refresh_s=refresh_s)
        return App(settings, Store(str(self.cache), s3_client=client(endpoint or self.proxy.url)))

    @property
    def registry(self) -> Registry:
        return Registry(S3Blobs(self.admin, self.bucket), "models/admission/")

    @property
    def folder(self) -> str:
        return f"s3://{self.bucket}/models/admission/"

    def leftovers(self) -> list[str]:
        """Temporary files (download parts, sidecar temps) left in the cache."""
        return sorted(p.name for p in self.cache.rglob(".*") if p.is_file())

    def cached_models(self) -> list[str]:
        return sorted(p.name for p in self.cache.rglob("*.rds") if p.is_file())


@pytest.fixture
def world(aws_env: None, moto_endpoint: tuple[str, int], proxy: FaultProxy, model_path: Path, second_model: Path,
          tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    """A fresh bucket; the proxy clear before and after; a tmpfs cache when the test asks for one."""
    admin = client(f"http://{moto_endpoint[0]}:{moto_endpoint[1]}")
    bucket = f"faults-{uuid.uuid4().hex[:10]}"
    admin.create_bucket(Bucket=bucket)
    proxy.clear()
    proxy.up()
    # the tmp-full cases (by name) get a small tmpfs as their cache
    tmpfs = TmpFull(tmp_path / "tmpfs") if "tmp-full" in request.node.name or "tmp_full" in request.node.name else None
    cache = tmpfs.root if tmpfs else tmp_path / "cache"
    w = World(admin, proxy, bucket, cache, model_path, second_model, tmpfs)
    yield w
    proxy.clear()
    proxy.up()
    if tmpfs:
        tmpfs.unmount()


def ask(app: App) -> tuple[int, dict[str, str], dict[str, Any]]:
    """GET /predict?gre=800&gpa=4&rank=1 as API Gateway sends it: status, headers, body."""
    answer = app.handle(load_event("apigw_rest_get_predict.json"), LambdaContext())
    assert "Traceback" not in answer["body"]
    return answer["statusCode"], answer["headers"], json.loads(answer["body"])


# -- each fault: how to cause it and how it clears -------------------------------------------


@dataclass(frozen=True)
class Case:
    """A fault, what a fresh container must answer while it lasts, and the words that name it."""

    name: str
    status: int
    words: tuple[str, ...]


CASES = [
    Case("missing", 503, ("does not exist",)),
    Case("denied", 500, ("denied", "s3:GetObject")),
    Case("down", 503, ("unreachable",)),
    Case("slow", 503, ("unreachable", "timeout")),
    Case("throttled", 503, ("throttling", "SlowDown")),
    Case("cut", 503, ("retried",)),
    Case("corrupt", 500, ("cannot be served",)),
    Case("tmp-full", 503, ("No space left",)),
]
IDS = [c.name for c in CASES]


def start_fault(name: str, w: World, key: str) -> Callable[[], None]:
    """Turn the fault on for the object at ``key``; returns what clears it."""
    p = w.proxy
    if name == "missing":
        w.admin.delete_object(Bucket=w.bucket, Key=key)
        return lambda: w.admin.upload_file(str(w.model), w.bucket, key)
    if name == "denied":
        p.set("status", status=403, code="AccessDenied", message="Access Denied")
        return p.clear
    if name == "down":
        p.down()
        return p.up
    if name == "slow":
        p.set("delay", match=key, delay_s=5.0)  # longer than the 0.5 s read timeout
        return p.clear
    if name == "throttled":
        p.set("status", status=503, code="SlowDown")
        return p.clear
    if name == "cut":
        p.set("cut", match=key)
        return p.clear
    if name == "corrupt":
        w.admin.put_object(Bucket=w.bucket, Key=key, Body=GARBAGE)
        return lambda: w.admin.upload_file(str(w.model), w.bucket, key)
    if name == "tmp-full":
        assert w.tmpfs is not None
        w.tmpfs.fill()
        return w.tmpfs.free
    raise AssertionError(name)


def fault_fired(name: str, w: World) -> bool:
    """The proxy really applied the fault (a test whose fault never fired proves nothing)."""
    if name in ("denied", "slow", "throttled", "cut"):
        return w.proxy.faulted > 0
    return True


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fresh_container_gets_a_clear_5xx_then_recovers(world: World, case: Case, record_property: Any) -> None:
    # GIVEN the model in S3 and a container that has not loaded it yet
    key = "admission.rds"
    world.admin.upload_file(str(world.model), world.bucket, key)
    app = world.app(f"s3://{world.bucket}/{key}")
    # WHEN the fault is on
    clear = start_fault(case.name, world, key)
    status, headers, body = ask(app)
    record_property("observed", f"{status} Retry-After={headers.get('Retry-After', '-')}: {body['message'][:140]}")
    # THEN a 5xx that names the problem, Retry-After when retrying helps, nothing half-written
    assert fault_fired(case.name, world)
    assert status == case.status, body
    assert any(w.lower() in body["message"].lower() for w in case.words), body["message"]
    assert ("Retry-After" in headers) == (status == 503)
    assert world.leftovers() == []
    # a second request while the fault lasts is answered the same way (nothing cached from the failure)
    assert ask(app)[0] == case.status
    # WHEN the fault clears THEN the same App serves the model, without a restart
    clear()
    status, _, body = ask(app)
    assert status == 200, body
    assert body["result"] is True and 0.5 < body["probability"] < 1
    assert world.leftovers() == []


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_serving_container_keeps_the_last_good_model(world: World, case: Case, record_property: Any) -> None:
    # GIVEN a versioned folder serving v1, the pointer re-read on every request
    registry = world.registry
    v1 = publish_file(registry, str(world.model)).version
    app = world.app(world.folder, refresh_s=0)
    status, _, first = ask(app)
    assert status == 200 and first["model"]["version"] == v1
    # WHEN v2 is promoted while the fault is on (for "corrupt", the promoted file is garbage)
    if case.name == "corrupt":
        bad = world.cache.parent / "garbage.rds"
        bad.write_bytes(GARBAGE)
        publish_file(registry, str(bad))
        clear = lambda: publish_file(registry, str(world.second))  # the fix: a good version is promoted  # noqa: E731
    else:
        pointer = publish_file(registry, str(world.second))
        key = registry.model_key(pointer.version)
        clear = start_fault(case.name, world, key)
        if case.name == "missing":  # the fix: v2's own file is uploaded
            clear = lambda: world.admin.upload_file(str(world.second), world.bucket, key)  # noqa: E731
    answers = [ask(app) for _ in range(2)]
    # THEN v1 keeps answering, correctly, and nothing half-written is left
    assert fault_fired(case.name, world)
    record_property("observed", f"{answers[-1][0]} served by {answers[-1][2].get('model', {}).get('version')} (v1={v1})")
    for status, _, body in answers:
        assert status == 200, body
        assert body["model"]["version"] == v1 and body["probability"] == first["probability"]
    assert world.leftovers() == []
    # WHEN the fault clears THEN the new version is served by the same App
    clear()
    status, _, body = ask(app)
    assert status == 200, body
    assert body["model"]["version"] == registry.pointer().version != v1
    assert body["probability"] == pytest.approx(first["probability"], abs=1e-12)
    assert world.leftovers() == []
    # and the old version's file does not stay in /tmp (R holds it in memory)
    assert f"{v1}.rds" not in world.cached_models()


def test_sha256_mismatch_is_refused_then_served_once_fixed(world: World, record_property: Any) -> None:
    # GIVEN v1 served, then v2 promoted whose file was swapped for other bytes
    registry = world.registry
    v1 = publish_file(registry, str(world.model)).version
    running = world.app(world.folder, refresh_s=0)
    assert ask(running)[2]["model"]["version"] == v1
    v2 = publish_file(registry, str(world.second)).version
    key = registry.model_key(v2)
    world.admin.put_object(Bucket=world.bucket, Key=key, Body=world.model.read_bytes())
    # THEN the running container keeps v1, a fresh one answers a 500 that names the mismatch
    assert ask(running)[2]["model"]["version"] == v1
    fresh = world.app(world.folder, refresh_s=0)
    status, headers, body = ask(fresh)
    record_property("observed", f"{status}: {body['message'][:140]}")
    assert status == 500 and "does not match its manifest" in body["message"]
    assert f"{v2}.rds" not in world.cached_models() and world.leftovers() == []
    # WHEN the right bytes are put back THEN both serve v2
    world.admin.upload_file(str(world.second), world.bucket, key)
    assert ask(fresh)[2]["model"]["version"] == v2
    assert ask(running)[2]["model"]["version"] == v2


def test_tmp_full_only_for_the_sidecar(world: World, record_property: Any) -> None:
    """Room for the model file but not for its small cache record: the verified model is still served."""
    if world.tmpfs is None:
        pytest.skip("needs the tmpfs")
    key = "admission.rds"
    world.admin.upload_file(str(world.model), world.bucket, key)
    app = world.app(f"s3://{world.bucket}/{key}")
    # GIVEN exactly the model's pages free (tmpfs allocates 4 KiB pages)
    pages = -(-world.model.stat().st_size // 4096)
    world.tmpfs.fill(leave_bytes=pages * 4096)
    status, headers, body = ask(app)
    record_property("observed", f"{status} " + (body.get("message") or f"served, version {body['model']['version']}")[:150])
    # THEN the verified model is served (the record only spares a later download) ...
    assert status == 200, body
    # ... and no half-written record or part file is left
    assert world.leftovers() == []
    world.tmpfs.free()
    assert ask(app)[0] == 200
    assert world.leftovers() == []



# -- the init: the model fetched on a thread (bounded wait) beside R's start ----------------------------

# A new process with S3 behind the proxy: Lambda's init (import handler) runs
# with the fault on, then one request, then (told by the test, the fault
# cleared) another. The default clients of the store are used, as in Lambda.
INIT_CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
t0 = time.perf_counter()
import handler
init_s = time.perf_counter() - t0
event = json.load(open({event!r}))
print(json.dumps({{"init_s": init_s, "loaded_at_init": handler.app._model is not None,
                  "phases": handler.app.init_phases}}), flush=True)
for _ in range(2):
    sys.stdin.readline()
    print(json.dumps(handler.lambda_handler(event, None)), flush=True)
"""


@pytest.mark.parametrize("fault", ["down", "throttled"])
def test_init_survives_s3_failing_at_the_cold_start(world: World, fault: str, tmp_path: Path) -> None:
    # GIVEN the model in S3 and the fault on before the process starts
    from conftest import EVENTS, ROOT

    key = "admission.rds"
    world.admin.upload_file(str(world.model), world.bucket, key)
    start_fault(fault, world, key)
    env = {**os.environ, "MODEL_URI": f"s3://{world.bucket}/{key}", "AWS_ENDPOINT_URL": world.proxy.url,
           "MODEL_CACHE_DIR": str(tmp_path / "container-tmp"), "LOG_LEVEL": "INFO"}
    child = subprocess.Popen([sys.executable, "-c", INIT_CHILD.format(root=str(ROOT),
                              event=str(EVENTS / "apigw_rest_get_predict.json"))],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        # WHEN Lambda's init runs (R starts while the download fails)
        init = json.loads(child.stdout.readline() or "null")
        assert init is not None, child.stderr.read()[-3000:]
        # THEN the init completes, within Lambda's 10 s, without a model
        assert not init["loaded_at_init"] and init["init_s"] < 10, init
        assert "r_start_ms" in init["phases"] and "load_ms" not in init["phases"]
        assert world.proxy.faulted > 0 or fault == "down"
        # and the first request answers 503 with Retry-After
        child.stdin.write("\n")
        child.stdin.flush()
        first = json.loads(child.stdout.readline())
        assert first["statusCode"] == 503 and "Retry-After" in first["headers"], first
        # WHEN the fault clears THEN the next request is served, no restart
        world.proxy.clear()
        world.proxy.up()
        child.stdin.write("\n")
        child.stdin.flush()
        second = json.loads(child.stdout.readline())
        assert second["statusCode"] == 200, second
        assert json.loads(second["body"])["result"] is True
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    # the init said why it has no model: the download failed, or its retries outlasted the init's wait
    logs = child.stderr.read()
    assert "could not be fetched at init" in logs or "still downloading at the end of init" in logs, logs[-2000:]


def test_download_still_running_at_the_end_of_init_is_finished_by_the_first_request(world: World) -> None:
    # GIVEN an init that waits 0.1 s for the download, and S3 stalling longer than the client's timeout
    key = "admission.rds"
    world.admin.upload_file(str(world.model), world.bucket, key)
    settings = Settings(model_uri=f"s3://{world.bucket}/{key}", cache_dir=str(world.cache), init_wait_s=0.1)
    app = App(settings, Store(str(world.cache), s3_client=client(world.proxy.url)))
    world.proxy.set("delay", match=key, delay_s=5.0)
    # WHEN the init runs THEN it returns without the model, the download still running
    phases = app.warm_up()
    assert "load_ms" not in phases and "fetch_ms" not in phases
    # and the first request waits for that download: its timeout is a 503 with Retry-After
    status, headers, body = ask(app)
    assert world.proxy.faulted > 0
    assert status == 503 and "Retry-After" in headers, body
    assert world.leftovers() == []
    # WHEN S3 answers again THEN the same app serves
    world.proxy.clear()
    status, _, body = ask(app)
    assert status == 200 and body["result"] is True, body


def test_init_loads_the_model_so_the_first_request_fetches_nothing(world: World) -> None:
    # GIVEN the model in S3 and a healthy proxy
    key = "admission.rds"
    world.admin.upload_file(str(world.model), world.bucket, key)
    app = world.app(f"s3://{world.bucket}/{key}")
    # WHEN the init runs
    phases = app.warm_up()
    # THEN R started, the model was fetched and loaded, and the phases are reported
    assert {"r_start_ms", "fetch_ms", "load_ms", "init_ms"} <= set(phases)
    forwarded = world.proxy.forwarded
    status, _, body = ask(app)
    assert status == 200 and body["result"] is True
    # and the first request went nowhere near S3
    assert world.proxy.forwarded == forwarded
    # a second warm-up is a no-op
    assert app.warm_up() is phases and world.proxy.forwarded == forwarded
