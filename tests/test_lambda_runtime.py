"""The zip runs under Lambda's own runtime client, on the runtime's Python, where no R exists.

build/admission.zip (scripts/package.sh: R 4.5 built in a Debian 11 root,
rpy2 in ABI mode, cffi's backend for CPython 3.12) is unpacked at /var/task
of a bubblewrap sandbox laid out like Lambda's (tests/sandbox.py): only glibc,
libstdc++/libgcc_s and CPython's own libraries from the host, no R, no BLAS.
Inside it, ``python3.12 -m awslambdaric handler.lambda_handler`` (Lambda's
runtime interface client, from PyPI, in /var/runtime) polls a stand-in of the
Runtime API (tests/runtime_api.py) on 127.0.0.1 for a direct payload, an API
Gateway REST event and a bad payload. The probabilities must be the ones R
itself computes (Rscript in a separate process, the system R 4.2).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from conftest import load_event

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runtime_api  # noqa: E402
from sandbox import Sandbox, ensure_package, find_python, package_python_version  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "admission.rds"


def run_runtime_client(sandbox: Sandbox, events: list[Any], handler: str = "handler.lambda_handler",
                       timeout: float = 120) -> tuple[list[runtime_api.Outcome], list[str], str, float]:
    """Start awslambdaric in the sandbox against a fresh Runtime API; feed it ``events``.

    Returns the outcomes (in order), the request ids, the process's stderr,
    and the seconds from spawning the process to the first outcome.
    """
    api = runtime_api.start()
    ids = [api.add(event) for event in events]
    env = {"AWS_LAMBDA_RUNTIME_API": api.address, "_HANDLER": handler}
    t0 = time.time()
    proc = subprocess.Popen(sandbox.command([sandbox.interpreter, "-m", "awslambdaric", handler], env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        expected = 1 if handler != "handler.lambda_handler" else len(events)
        deadline = time.monotonic() + timeout
        outcomes: list[runtime_api.Outcome] = []
        while time.monotonic() < deadline:
            outcomes = api.wait(expected, 1.0)
            if len(outcomes) >= expected or proc.poll() is not None:
                outcomes = api.wait(expected, 2.0)
                break
    finally:
        proc.kill()
        out, err = proc.communicate(timeout=30)
        api.close()
    first = outcomes[0].t_done - t0 if outcomes else float("nan")
    return outcomes, ids, out + err, first


def r_probabilities(rows: list[dict[str, Any]]) -> list[float]:
    """predict(type = "response") of the admission model, by R itself (Rscript)."""
    code = r"""
    a <- commandArgs(TRUE)
    m <- readRDS(a[1])
    d <- read.csv(text = a[2])
    d$rank <- factor(d$rank, levels = m$xlevels$rank)
    cat(sprintf("%.17g", predict(m, newdata = d, type = "response")), sep = "\n")
    """
    csv = "gre,gpa,rank\n" + "".join(f"{r['gre']},{r['gpa']},{r['rank']}\n" for r in rows)
    out = subprocess.run(["Rscript", "-e", code, str(MODEL), csv], capture_output=True, text=True, check=True)
    return [float(x) for x in out.stdout.split()]


@pytest.fixture(scope="session")
def target_python() -> Path:
    """The CPython the zip targets (3.12 by default), found on this machine, or a skip."""
    try:
        ensure_package()
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"package.sh failed ({exc.returncode}):\n{exc.stdout[-3000:]}\n{exc.stderr[-3000:]}")
    version = package_python_version()
    python = find_python(version)
    if python is None:
        pytest.skip(f"no CPython {version} on this machine (pyenv or python{version} on PATH): "
                    f"the zip targets Lambda's python{version} runtime")
    return python


@pytest.fixture(scope="session")
def ric_sandbox(target_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    """The unpacked zip in a Lambda-like sandbox on the target Python, the model in its /tmp."""
    task = tmp_path_factory.mktemp("ric-task")
    with zipfile.ZipFile(ROOT / "build" / "admission.zip") as zf:
        for info in zf.infolist():
            zf.extract(info, task)
            mode = info.external_attr >> 16
            if mode:
                (task / info.filename).chmod(mode & 0o7777)
    tmp = tmp_path_factory.mktemp("ric-tmp")
    shutil.copy(MODEL, tmp / "admission.rds")
    return Sandbox.create(task, tmp, {"MODEL_URI": "/tmp/admission.rds", "MODEL_CACHE_DIR": "/tmp"}, python=target_python)


def test_runtime_client_serves_direct_rest_and_bad_events_as_r_scores(ric_sandbox: Sandbox) -> None:
    direct, rest, bad = load_event("direct_single.json"), load_event("apigw_rest_post_predict.json"), load_event("direct_bad.json")
    outcomes, ids, log, _ = run_runtime_client(ric_sandbox, [direct, rest, bad])
    assert [o.kind for o in outcomes] == ["response", "response", "error"], log[-4000:]
    assert [o.request_id for o in outcomes] == ids
    expected_direct, expected_rest = r_probabilities([direct, json.loads(rest["body"])])
    # the direct payload: the handler's dict, as the runtime serialised it
    assert outcomes[0].body["probability"] == expected_direct
    assert outcomes[0].body["result"] is (expected_direct > 0.5)
    # the REST event: an API Gateway proxy response with a JSON body and CORS headers
    response = outcomes[1].body
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["probability"] == expected_rest
    assert "Access-Control-Allow-Origin" in {k for k in response.get("headers", {})} | set(response.get("multiValueHeaders") or {})
    # the bad payload: an invocation error whose message is the JSON error, as `aws lambda invoke` shows it
    error = outcomes[2].body
    assert error["errorType"] == "BadRequest"
    message = json.loads(error["errorMessage"])
    assert message["httpStatus"] == 400 and message["errorType"] == "BadRequest"
    assert {e["field"] for e in message["errors"]} >= {"gre", "gpa", "rank"}
    # R started from the zip, without warnings about its environment
    assert "Unable to determine R library path" not in log and "Warning" not in log, log[-4000:]


def test_runtime_client_reports_an_init_error(ric_sandbox: Sandbox) -> None:
    """A handler that cannot be found is reported to /runtime/init/error, as Lambda shows it."""
    outcomes, _, log, _ = run_runtime_client(ric_sandbox, [load_event("direct_single.json")], handler="handler.no_such_handler")
    assert [o.kind for o in outcomes] == ["init_error"], log[-3000:]
    assert outcomes[0].body["errorType"] == "Runtime.HandlerNotFound"
    assert "no_such_handler" in outcomes[0].body["errorMessage"]


def test_the_zip_has_no_python_extension_but_for_its_target(ric_sandbox: Sandbox) -> None:
    """_cffi_backend is the target CPython's; rpy2 is pure Python (ABI mode); no API-mode module."""
    report = json.loads((ROOT / "build" / "admission.report.json").read_text())
    tag = report["python"].replace(".", "")
    names = zipfile.ZipFile(ROOT / "build" / "admission.zip").namelist()
    modules = [n for n in names if n.endswith(".so") and not n.startswith(("R/", "lib/"))]
    assert modules == [f"_cffi_backend.cpython-{tag}-x86_64-linux-gnu.so"], modules
    assert "_rinterface_cffi_abi.py" in names and "_rinterface_cffi_api.abi3.so" not in names
    assert report["extension_modules"] == {modules[0]: f"cpython-{tag}-x86_64-linux-gnu"}
    # and the runtime really is that Python
    probe = ric_sandbox.run([ric_sandbox.interpreter, "-c", "import sys, _cffi_backend; print('%d%d' % sys.version_info[:2])"])
    assert probe.returncode == 0 and probe.stdout.strip() == tag, probe
