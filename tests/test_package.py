"""The deployment zip is self-contained: it runs, as Lambda runs it, where no R is installed.

build/admission.zip is (re)built by scripts/package.sh when missing or older
than its sources (R 4.5 is built once, in a Debian 11 root, and cached under
build/cache), unpacked, and run in a bubblewrap sandbox (tests/sandbox.py) on
the CPython it targets (3.12, found with pyenv or on PATH) that hides the
system R and every host library a Lambda runtime lacks. Its answers must equal
the in-tree handler's (system R 4.2, the venv's rpy2) for the same model from
the same (moto) S3; a copy with one library or R package removed must fail.
tests/test_lambda_runtime.py runs it under Lambda's own runtime client.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import LambdaContext, load_event

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sandbox import Run, Sandbox, ensure_package, find_python, package_python_version, package_sources  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ZIP = ROOT / "build" / "admission.zip"
REPORT = ROOT / "build" / "admission.report.json"
SCRIPT = ROOT / "scripts" / "package.sh"
BUCKET, KEY = "serverless-poc-models", "admission.rds"
MODEL_URI = f"s3://{BUCKET}/{KEY}"
# What start-up and scoring load (loadedNamespaces() after real requests).
R_PACKAGES = {"base", "compiler", "datasets", "graphics", "grDevices", "methods", "stats", "tools", "utils",
              "data.table"}  # data.table: the batch path (rlambda/batch.R)
SCORED_EVENTS = [
    "direct_single.json",
    "direct_batch.json",
    "apigw_rest_post_predict.json",
    "apigw_http_post_predict.json",
    "apigw_http_get_metadata.json",
]


def build(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run scripts/package.sh; on failure show its last lines."""
    proc = subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        pytest.fail(f"package.sh failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def package_zip() -> Path:
    """build/admission.zip, rebuilt if missing or older than its sources."""
    try:
        return ensure_package()
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"package.sh failed ({exc.returncode}):\n{exc.stdout[-3000:]}\n{exc.stderr[-3000:]}")


@pytest.fixture(scope="session")
def unpacked(package_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zip unpacked as Lambda unpacks it into /var/task."""
    root = tmp_path_factory.mktemp("task")
    with zipfile.ZipFile(package_zip) as zf:
        for info in zf.infolist():
            zf.extract(info, root)
            mode = info.external_attr >> 16
            if mode:
                os.chmod(root / info.filename, mode & 0o7777)
    return root


@pytest.fixture(scope="session")
def s3_endpoint(model_path: Path) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 holding the model at the original bucket/key."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=BUCKET)
    s3.upload_file(str(model_path), BUCKET, KEY)
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def sandbox(unpacked: Path, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    """The Lambda-like sandbox around the unpacked zip, with MODEL_URI on moto S3."""
    env = {"MODEL_URI": MODEL_URI, "AWS_ENDPOINT_URL": s3_endpoint, "MODEL_CACHE_DIR": "/tmp"}
    version = package_python_version()
    python = find_python(version)
    if python is None:
        pytest.skip(f"no CPython {version} on this machine (pyenv or python{version} on PATH): the zip targets it")
    return Sandbox.create(unpacked, tmp_path_factory.mktemp("lambda-tmp"), env, python=python)


@pytest.fixture(scope="session")
def in_tree_answers(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The in-tree handler's answers (system R, venv rpy2) for the same model from the same S3."""
    from rlambda.app import App
    from rlambda.settings import Settings

    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                             "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=s3_endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_SESSION_TOKEN="testing", AWS_DEFAULT_REGION="us-east-1")
    try:
        app = App(Settings(model_uri=MODEL_URI, cache_dir=str(tmp_path_factory.mktemp("in-tree-cache"))))
        answers = {name: app.handle(load_event(name), LambdaContext()) for name in SCORED_EVENTS}
        try:
            app.handle(load_event("direct_bad.json"), LambdaContext())
            answers["direct_bad.json"] = None
        except Exception as exc:  # direct invocations report errors by raising
            answers["direct_bad.json"] = json.loads(str(exc))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return answers


@pytest.fixture(scope="session")
def sandbox_run(sandbox: Sandbox) -> Run:
    """One cold process in the sandbox answering every scored event, then the bad one."""
    events = [load_event(name) for name in SCORED_EVENTS] + [load_event("direct_bad.json")]
    return sandbox.invoke(events)


def _without_request_id(error: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in error.items() if k not in ("request_id", "requestId")}


# -- the package itself ---------------------------------------------------------


def test_zip_has_the_handler_at_its_root_and_no_boto3(package_zip: Path) -> None:
    names = zipfile.ZipFile(package_zip).namelist()
    for required in ("handler.py", "test_handler.py", "rlambda/__init__.py", "rlambda/serve.R",
                     "rpy2/rinterface.py", "_rinterface_cffi_abi.py", "R/lib/libR.so", "lib/libRblas.so",
                     "lib/libRlapack.so", "R/bin/R", "R/bin/Rscript", "R/bin/exec/Rscript", "R/etc/Renviron",
                     "R/etc/repositories", "R/library/base/R/Rprofile"):
        assert required in names, required
    assert any(n.startswith("_cffi_backend.") for n in names)
    tops = {n.split("/")[0] for n in names}
    assert not tops & {"boto3", "botocore", "s3transfer", "moto", "cffi", "jinja2"}, tops
    assert not [n for n in names if n.split("/")[-2:-1] in (["help"], ["html"], ["po"], ["tests"])]
    assert not [n for n in names if n.startswith("lib/") and n.split("/")[1].startswith(("libc.so", "libm.so", "ld-linux"))]


def test_zip_carries_bytecode_for_its_python_only(package_zip: Path) -> None:
    """Each module of handler, rlambda and rpy2 has its .pyc for the zip's CPython, and no other .pyc is there."""
    report = json.loads(package_zip.with_name(package_zip.name.removesuffix(".zip") + ".report.json").read_text())
    names = set(zipfile.ZipFile(package_zip).namelist())
    pycs = {n for n in names if n.endswith(".pyc")}
    if not report["bytecode"]:
        pytest.skip(f"no CPython {report['python']} on this machine to compile with (the zip works without)")
    tag = "cpython-" + report["python"].replace(".", "")
    sources = [n for n in names if n.endswith(".py") and n.split("/")[0] in ("rlambda", "rpy2", "handler.py",
                                                                           "_rinterface_cffi_abi.py")]
    expected = set()
    for source in sources:
        folder, _, name = source.rpartition("/")
        expected.add(f"{folder + '/' if folder else ''}__pycache__/{name[:-3]}.{tag}.pyc")
    assert pycs == expected


def test_bytecode_names_var_task_and_never_checks_the_sources(package_zip: Path) -> None:
    """unchecked-hash .pyc (flags 0b01: hash-based, unchecked) whose code names /var/task, as Lambda lays it out."""
    report = json.loads(package_zip.with_name(package_zip.name.removesuffix(".zip") + ".report.json").read_text())
    if not report["bytecode"]:
        pytest.skip(f"no CPython {report['python']} on this machine to compile with")
    tag = "cpython-" + report["python"].replace(".", "")
    data = zipfile.ZipFile(package_zip).read(f"rlambda/__pycache__/app.{tag}.pyc")
    assert int.from_bytes(data[4:8], "little") == 0b01
    assert b"/var/task/rlambda/app.py" in data


def test_zip_carries_only_the_r_packages_startup_needs(package_zip: Path) -> None:
    names = zipfile.ZipFile(package_zip).namelist()
    packages = {n.split("/")[2] for n in names if n.startswith("R/library/") and n.count("/") >= 3}
    assert packages == R_PACKAGES


def test_zip_is_within_lambda_limits_and_reports_its_figures(package_zip: Path) -> None:
    report = json.loads(REPORT.read_text())
    unzipped = sum(i.file_size for i in zipfile.ZipFile(package_zip).infolist())
    assert report["zip_bytes"] == package_zip.stat().st_size <= 50 * 1024 * 1024
    assert report["unzipped_bytes"] == unzipped <= 250 * 1024 * 1024
    assert sum(c["bytes"] for c in report["components"]) == unzipped
    assert report["python"] in ("3.12", "3.13") and report["r_version"] == "4.5.0"
    # the measured floor is within Amazon Linux 2023's (a build over it fails)
    assert report["glibc_by_file"]["R/lib/libR.so"]
    floor = tuple(int(x) for x in report["glibc_floor"].split("."))
    assert floor == max(tuple(int(x) for x in v.split(".")) for v in report["glibc_by_file"].values()) <= (2, 34)
    assert report["glibcxx_floor"] == "none" or tuple(map(int, report["glibcxx_floor"].split("."))) <= (3, 4, 29)


def test_rebuild_gives_the_same_zip(package_zip: Path, tmp_path: Path) -> None:
    """Fixed times, sorted entries, no extra attributes: same names, sizes and CRCs."""
    again = tmp_path / "admission.zip"

    def listing(path: Path) -> list[tuple[str, int, int, tuple[int, ...]]]:
        return [(i.filename, i.file_size, i.CRC, i.date_time) for i in zipfile.ZipFile(path).infolist()]

    build("--out", str(again))
    first = listing(package_zip)
    if first != listing(again) and max(p.stat().st_mtime for p in package_sources()) > package_zip.stat().st_mtime:
        # A source was edited since the session's zip was built (others work in
        # this tree): compare two builds of the current tree instead.
        build("--out", str(tmp_path / "first.zip"))
        first = listing(tmp_path / "first.zip")
    assert first == listing(again)
    assert [name for name, *_ in first] == sorted(name for name, *_ in first)
    assert {dt for *_, dt in first} == {(2000, 1, 1, 0, 0, 0)}


@pytest.mark.parametrize(
    "limit,words",
    [("LAMBDA_MAX_ZIP_BYTES", "the zip is"), ("LAMBDA_MAX_UNZIPPED_BYTES", "the package unzips to")],
)
def test_size_limits_fail_clearly_and_write_no_zip(package_zip: Path, tmp_path: Path, limit: str, words: str) -> None:
    out = tmp_path / "too-big.zip"
    proc = build("--out", str(out), env={limit: "1000000"}, check=False)
    assert proc.returncode != 0
    assert words in proc.stderr and "over the limit of 1000000" in proc.stderr, proc.stderr[-1500:]
    assert not out.exists()


def test_build_scripts_are_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    proc = subprocess.run(["shellcheck", "--severity=style", str(SCRIPT), str(ROOT / "scripts" / "build_r.sh")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_an_unreachable_mirror_fails_naming_the_step_and_leaves_nothing(tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "x.zip"
    proc = build("--out", str(out), env={"R_BUILD_CACHE": str(cache), "R_BUILD_MIRROR": "http://127.0.0.1:9/debian"},
                 check=False)
    assert proc.returncode != 0
    assert 'build_r.sh: FAILED at step "source index (trixie)": apt-get update' in proc.stderr, proc.stderr[-1500:]
    assert "package.sh: FAILED at step [1] R built for an old glibc" in proc.stderr
    assert not out.exists()
    assert not [p.name for p in cache.iterdir() if p.name.startswith(("R-", "root-", "rpkg-", "."))]


def test_a_source_tarball_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    """A tampered (or silently changed) R source never reaches the build: its sha256 must be the pinned one."""
    cache = tmp_path / "cache"
    (cache / "src").mkdir(parents=True)
    (cache / "src" / "r-base_4.5.0.orig.tar.gz").write_bytes(b"not R")
    proc = build("--out", str(tmp_path / "x.zip"), env={"R_BUILD_CACHE": str(cache)}, check=False)
    assert proc.returncode != 0
    assert 'FAILED at step "R 4.5.0 source": r-base_4.5.0.orig.tar.gz has sha256' in proc.stderr, proc.stderr[-1500:]
    assert "is pinned (file removed)" in proc.stderr
    assert not (cache / "src" / "r-base_4.5.0.orig.tar.gz").exists() and not (tmp_path / "x.zip").exists()
    assert not [p.name for p in cache.iterdir() if p.name.startswith(("R-", "root-"))]


def test_python_option_refuses_a_runtime_lambda_zip_cannot_serve() -> None:
    proc = build("--python", "3.11", check=False)
    assert proc.returncode == 2 and "python3.12 and python3.13" in proc.stderr, proc.stderr


def test_python_3_13_zip_carries_the_backend_for_3_13(package_zip: Path, tmp_path: Path) -> None:
    out = tmp_path / "py313.zip"
    build("--python", "3.13", "--out", str(out))
    modules = [n for n in zipfile.ZipFile(out).namelist() if n.startswith("_cffi_backend")]
    assert modules == ["_cffi_backend.cpython-313-x86_64-linux-gnu.so"]
    assert json.loads((tmp_path / "py313.report.json").read_text())["python"] == "3.13"


def test_a_glibc_floor_above_the_target_fails_the_build_naming_the_file(package_zip: Path, tmp_path: Path) -> None:
    proc = build("--out", str(tmp_path / "strict.zip"), env={"LAMBDA_GLIBC": "2.17"}, check=False)
    assert proc.returncode != 0
    assert "R/lib/libR.so needs GLIBC_2.29 (> 2.17)" in proc.stderr, proc.stderr[-2000:]
    assert "FAILED at step" in proc.stderr and "python3.12 runtime" in proc.stderr
    assert not (tmp_path / "strict.zip").exists() and not (tmp_path / "strict.report.json").exists()


def test_an_extension_module_for_another_python_fails_the_check(package_zip: Path, tmp_path: Path) -> None:
    """scripts/elf_check.py floors: a cpython-311 module in a 3.12 package is named and fails."""
    stage = tmp_path / "stage"
    stage.mkdir()
    with zipfile.ZipFile(package_zip) as zf:
        backend = next(n for n in zf.namelist() if n.startswith("_cffi_backend"))
        (stage / "_cffi_backend.cpython-311-x86_64-linux-gnu.so").write_bytes(zf.read(backend))
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "elf_check.py"), "floors", str(stage),
                           str(tmp_path / "floors.json"), "2.34", "3.4.29", "312"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "_cffi_backend.cpython-311-x86_64-linux-gnu.so: extension module for cpython-311" in proc.stderr


def test_r_packages_option_builds_the_dependency_closure_from_source(sandbox: Sandbox, tmp_path: Path) -> None:
    """--r-packages bit64 builds bit64 and its dependency bit from trixie's sources; they load without a system R."""
    out = tmp_path / "bit64.zip"
    build("--r-packages", "bit64", "--out", str(out))
    task = tmp_path / "task"
    subprocess.run(["unzip", "-q", str(out), "-d", str(task)], check=True)
    packages = {p.name for p in (task / "R" / "library").iterdir()}
    assert packages == R_PACKAGES | {"bit64", "bit"}
    report = json.loads((tmp_path / "bit64.report.json").read_text())
    assert tuple(map(int, report["glibc_by_file"]["R/library/bit64/libs/bit64.so"].split("."))) <= (2, 34)
    with_bit64 = Sandbox(task, sandbox.tmp, sandbox.python, sandbox.runtime, sandbox.allowed_libs, sandbox.env)
    run = with_bit64.run(["/var/task/R/bin/Rscript", "-e", "library(bit64); cat(as.character(as.integer64(2)^40 + 1L))"])
    assert run.returncode == 0 and run.stdout.strip() == "1099511627777", run


def test_model_option_bundles_a_forest_and_serves_it_like_the_tree(sandbox: Sandbox, tmp_path: Path) -> None:
    """--model forest.rds finds randomForest from the object; the sandboxed handler then scores it."""
    if subprocess.run(["Rscript", "-e", "library(randomForest)"], capture_output=True).returncode != 0:
        pytest.skip("r-cran-randomforest is not installed")
    # GIVEN a classification forest the default zip cannot serve
    lambda_tmp = tmp_path / "lambda-tmp"
    lambda_tmp.mkdir()
    rds = lambda_tmp / "forest.rds"
    fit = f'set.seed(1); f <- randomForest::randomForest(Species ~ ., iris, ntree = 50); saveRDS(f, "{rds}")'
    subprocess.run(["Rscript", "-e", fit], check=True, capture_output=True)
    rows = [{"Sepal.Length": 5.1 + i / 10, "Sepal.Width": 3.0, "Petal.Length": 1.4 + i / 3, "Petal.Width": 0.2 + i / 8}
            for i in range(12)]
    event = {"instances": rows}
    default_zip = Sandbox(sandbox.task_root, lambda_tmp, sandbox.python, sandbox.runtime, sandbox.allowed_libs,
                         {**sandbox.env, "MODEL_URI": "/tmp/forest.rds"})
    refused = default_zip.invoke([event])
    assert not refused.results[0]["ok"], refused
    assert "needs R package 'randomForest'" in json.dumps(refused.results[0]), refused.results
    # WHEN the zip is built for that model
    out = tmp_path / "forest.zip"
    build("--model", str(rds), "--out", str(out))
    task = tmp_path / "task"
    subprocess.run(["unzip", "-q", str(out), "-d", str(task)], check=True)
    assert "randomForest" in {p.name for p in (task / "R" / "library").iterdir()}
    # THEN the sandboxed handler answers exactly as the in-tree handler does
    with_forest = Sandbox(task, lambda_tmp, sandbox.python, sandbox.runtime, sandbox.allowed_libs,
                          {**sandbox.env, "MODEL_URI": "/tmp/forest.rds"})
    (answer,) = with_forest.invoke([event]).responses()
    from rlambda.app import App
    from rlambda.settings import Settings

    expected = App(Settings(model_uri=str(rds), cache_dir=str(tmp_path / "cache"))).handle(event, LambdaContext())
    assert answer["predictions"] == expected["predictions"]
    assert {p["class"] for p in answer["predictions"]} <= {"setosa", "versicolor", "virginica"}


# -- the sandbox is what it claims ------------------------------------------------


def test_sandbox_hides_system_r_and_has_no_rpy2_of_its_own(sandbox: Sandbox) -> None:
    listing = "import json, os; print(json.dumps({d: sorted(os.listdir(d)) for d in %r}))" % (
        ["/usr/lib/R", "/etc/R", "/usr/share/R", "/usr/lib/x86_64-linux-gnu"],
    )
    probe = sandbox.run(["/bin/sh", "-c", f"cd / && {sandbox.interpreter} -S -c \"{listing}\""])
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout)
    assert seen["/usr/lib/R"] == seen["/etc/R"] == seen["/usr/share/R"] == []
    visible = seen["/usr/lib/x86_64-linux-gnu"]
    assert "libc.so.6" in visible
    # (libstdc++ and libgcc_s are there: Lambda's runtime has them, its runtime client links them)
    assert not [n for n in visible if n.startswith(("libgfortran", "libicu", "libblas", "liblapack", "libR", "libpcre2"))], visible
    # Away from /var/task (cwd and PYTHONPATH), the runtime's Python has no rpy2.
    bare = sandbox.run(["/bin/sh", "-c", f"cd / && {sandbox.interpreter} -S -c 'import rpy2'"], env={"PYTHONPATH": "/var/runtime"})
    assert bare.returncode != 0 and "No module named 'rpy2'" in bare.stderr, bare


# -- the package runs as Lambda runs it -------------------------------------------


def test_rscript_from_the_package_works(sandbox: Sandbox) -> None:
    """rpy2 runs R_HOME/bin/Rscript at import; it must run from the package."""
    run = sandbox.run(["/var/task/R/bin/Rscript", "-e", 'cat(R.home(), Sys.getenv("LD_LIBRARY_PATH"), sep = "\\n")'])
    assert run.returncode == 0, run.stderr
    home, ld_path = run.stdout.splitlines()[:2]
    assert home == "/var/task/R"
    assert "/var/task/R/../lib" in ld_path.split(":")


BATCH_SCRIPT = """
import json, os, sys
sys.path[:0] = ["/var/task", "/var/runtime"]
from rlambda.app import App
from rlambda.batch import score_file
from rlambda.blobs import DirBlobs
result = score_file(App().model(), DirBlobs("/tmp/batch-store"), "inputs/x.csv", tmp_dir="/tmp/batch-work")
print(json.dumps(result.summary()))
"""


def test_the_zip_scores_a_batch_file_with_its_own_data_table(sandbox: Sandbox, model_path: Path) -> None:
    """The batch path (fread/fwrite of the data.table built for the zip) runs where no R is installed,
    and its probabilities equal R's own predict on the same rows (the host's R, another process)."""
    # GIVEN a CSV with a good row, a quoted id, a bad row and a CRLF ending, under the sandbox's /tmp
    store = sandbox.tmp / "batch-store"
    shutil.rmtree(store, ignore_errors=True)
    (store / "inputs").mkdir(parents=True)
    rows = [("a", "800", "4", "1"), ('"b, quoted"', "520", "2.9", "3"), ("c", "abc", "3", "2"), ("d", "640", "3.5", "4")]
    (store / "inputs" / "x.csv").write_bytes(("id,gre,gpa,rank\r\n" + "".join(",".join(r) + "\r\n" for r in rows)).encode())
    # WHEN the zip's own code scores it in the sandbox
    run = sandbox.run_python(["-c", BATCH_SCRIPT])
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert (summary["scored"], summary["failed"]) == (3, 1), summary
    with open(store / "outputs" / "x.csv", newline="") as fh:
        out = list(csv.DictReader(fh))
    assert [r["id"] for r in out] == ["a", "b, quoted", "d"]
    # THEN the probabilities equal R's predict(type = "response") computed by Rscript on the host
    code = (f'fit <- readRDS("{model_path}"); d <- data.frame(gre = c(800, 520, 640), gpa = c(4, 2.9, 3.5), '
            'rank = factor(c(1, 3, 4), levels = 1:4)); cat(sprintf("%.17g", predict(fit, d, type = "response")))')
    expected = [float(x) for x in subprocess.run(["Rscript", "-e", code], capture_output=True, text=True,
                                                 check=True).stdout.split()]
    got = [float(r["probability"]) for r in out]
    assert got == pytest.approx(expected, rel=1e-12, abs=0)
    with open(store / "outputs" / "x.errors.csv", newline="") as fh:
        (bad,) = list(csv.reader(fh))[1:]
    assert "gre must be a finite number" in ",".join(bad)


def test_the_zips_r_adds_no_environment_variable_while_the_download_runs(sandbox: Sandbox) -> None:
    """The zip's R (4.5, not the host's) sets the same names test_coldstart checks: none beside the download."""
    from test_coldstart import ORDER_PROBE

    # GIVEN the zip in the sandbox and its model in S3 WHEN Lambda's init (warm_up) runs, watched
    code = ORDER_PROBE.format(root="/var/task", model=MODEL_URI, cache="/tmp/order-probe-cache")
    run = sandbox.run_python(["-c", code])
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    # THEN the download began during R's start, once R's names were set, and the array never moved after
    assert seen["begun"]["r_started"] is False
    assert {"R_PLATFORM", "R_SESSION_TMPDIR"} <= set(seen["begun"]["names"])
    assert seen["begun"]["array"] == seen["fetch"]["array"] == seen["end"]["array"]
    assert seen["model"] is True and seen["session_tmpdir"] == seen["tempdir"]


def test_the_zips_r_started_before_rpy2_is_set_up_as_rpy2s_own_start(sandbox: Sandbox) -> None:
    """The zip's rpy2 (ABI mode) takes over the R 4.5 that rsession started as its own initr would set it up."""
    from test_coldstart import STATE_PROBE, check_same_start

    states = {}
    for how in ("rsession", "rpy2"):
        # GIVEN the zip in the sandbox WHEN R is started one way or the other
        run = sandbox.run_python(["-c", STATE_PROBE.format(root="/var/task"), how])
        assert run.returncode == 0, run.stderr[-3000:]
        states[how] = json.loads(run.stdout.strip().splitlines()[-1])
        # AND the process has ended: R's session folder under the sandbox's /tmp is gone
        tempdir = states[how].pop("tempdir")
        assert tempdir.startswith("/tmp/Rtmp") and not (sandbox.tmp / tempdir[len("/tmp/"):]).exists()
    # THEN both leave rpy2 set up alike, as rpy2 means to
    check_same_start(states)


BATCH_FAST_SCRIPT = BATCH_SCRIPT.replace('"inputs/x.csv"', '"inputs/y.csv"')


def test_the_zip_and_the_host_batch_a_plain_file_alike(sandbox: Sandbox, model_path: Path, tmp_path: Path) -> None:
    """A file without quotes goes straight to fread (no csv module), and 6,000 rows make batch.R parse
    each column's distinct values once: the zip's data.table and R write what the host's write."""
    # GIVEN 6,000 rows with bad cells, odd numbers and formula-like ids, no quote anywhere
    grid = [("a", "800", "4", "1"), ("-b", "520", "2.90", "3"), ("=c", "abc", "3", "2"), ("d", " 640 ", "3.5", "4"),
            ("@e", "8e2", "3.0", "9"), ("f", "0x10", "+.5", "2"), ("g", "1e400", "3.1", " 1 "), ("h", "", "4.00", "")]
    rows = [(f"{g[0]}{i}",) + g[1:] for i, g in ((i, grid[i % len(grid)]) for i in range(6000))]
    body = "id,gre,gpa,rank\n" + "".join(",".join(r) + "\n" for r in rows)
    store = sandbox.tmp / "batch-store"
    shutil.rmtree(store, ignore_errors=True)
    (store / "inputs").mkdir(parents=True)
    (store / "inputs" / "y.csv").write_text(body)
    host = tmp_path / "host"
    (host / "inputs").mkdir(parents=True)
    (host / "inputs" / "y.csv").write_text(body)
    # WHEN the zip scores it in the sandbox, and the host (system R, its data.table) in this process
    run = sandbox.run_python(["-c", BATCH_FAST_SCRIPT])
    assert run.returncode == 0, run.stderr[-3000:]
    from rlambda.app import App
    from rlambda.batch import score_file
    from rlambda.blobs import DirBlobs
    from rlambda.settings import Settings

    app = App(Settings(model_uri=str(model_path), cache_dir=str(tmp_path / "cache")))
    score_file(app.model(), DirBlobs(host), "inputs/y.csv", tmp_dir=str(tmp_path / "work"))

    def read(root: Path, name: str) -> list[list[str]]:
        with open(root / "outputs" / name, newline="") as fh:
            return list(csv.reader(fh))

    # THEN both write the same cells and the same errors; probabilities agree to R's precision
    zip_out, host_out = read(store, "y.csv"), read(host, "y.csv")
    assert len(zip_out) == len(host_out) == 1 + 6000 * 3 // 8
    assert [r[:5] for r in zip_out] == [r[:5] for r in host_out]
    assert [float(r[5]) for r in zip_out[1:]] == pytest.approx([float(r[5]) for r in host_out[1:]], rel=1e-12, abs=0)
    assert read(store, "y.errors.csv") == read(host, "y.errors.csv")


def test_collation_stays_out_of_the_icu_stub(sandbox: Sandbox) -> None:
    """R is built without ICU; R/etc/Renviron pins C collation, whatever the environment says,
    so strings sort in code point order on every machine (not by the host's locale tables)."""
    expr = 'cat(Sys.getlocale("LC_COLLATE"), sort(c("b", "A", "a", "B")), "methods" %in% loadedNamespaces())'
    run = sandbox.run(["/var/task/R/bin/Rscript", "-e", f"library(methods); {expr}"],
                      env={"LANG": "C.UTF-8", "LC_COLLATE": "C.UTF-8", "R_ICU_LOCALE": "en_US"})
    assert run.returncode == 0 and run.stderr == "", run
    assert run.stdout.split() == ["C", "A", "B", "a", "b", "TRUE"]


def test_sandboxed_answers_equal_the_in_tree_handler(sandbox_run: Run, in_tree_answers: dict[str, Any]) -> None:
    responses = sandbox_run.results
    assert len(responses) == len(SCORED_EVENTS) + 1
    for name, result in zip(SCORED_EVENTS, responses):
        assert result["ok"], (name, result, sandbox_run.stderr[-3000:])
        if name == "apigw_http_get_metadata.json":
            # The same model description; only the versions differ: the zip's
            # own R 4.5.0 on CPython 3.12 against the machine's R and venv.
            ours, theirs = (json.loads(r["body"]) for r in (result["response"], in_tree_answers[name]))
            assert (ours["r_version"], ours["python_version"][:4]) == ("4.5.0", package_python_version())
            for body in (ours, theirs):
                del body["r_version"], body["python_version"]
            assert ours == theirs
            continue
        assert result["response"] == in_tree_answers[name], name
    direct = responses[0]["response"]
    assert direct["result"] is True and 0.5 < direct["probability"] < 1
    assert responses[2]["response"]["statusCode"] == 200
    bad = responses[-1]
    assert not bad["ok"]
    assert _without_request_id(json.loads(bad["errorMessage"])) == _without_request_id(in_tree_answers["direct_bad.json"])


def test_sandboxed_start_up_is_clean(sandbox_run: Run) -> None:
    """No R start-up warnings, and rpy2's Rscript call succeeded."""
    assert sandbox_run.returncode == 0, sandbox_run.stderr[-3000:]
    assert "Unable to determine R library path" not in sandbox_run.stderr
    assert "R did not start" not in sandbox_run.stderr
    assert "was not found" not in sandbox_run.stderr and "Warning" not in sandbox_run.stderr


def test_test_handler_passes_inside_the_sandbox(sandbox: Sandbox) -> None:
    run = sandbox.run_python(["test_handler.py", "-v"])
    assert run.returncode == 0, run.stderr[-4000:]
    assert "Ran 3 tests" in run.stderr and "OK" in run.stderr and "skipped" not in run.stderr


# -- a package with a part missing fails -------------------------------------------


@pytest.mark.parametrize(
    "remove, evidence, r_check",
    [
        # libgfortran: stats.so cannot be loaded (liblapack needs it), so R
        # starts without stats and the model cannot be read; R itself names
        # the library when asked to load stats.
        ("lib/libgfortran.so.5", "stats", "libgfortran.so.5"),
        ("R/library/stats", "stats", "is not a valid installed package"),
        ("_cffi_backend.*", "_cffi_backend", None),
    ],
)
def test_a_package_missing_a_part_fails(
    unpacked: Path, sandbox: Sandbox, tmp_path: Path, remove: str, evidence: str, r_check: str | None
) -> None:
    broken = tmp_path / "task"
    shutil.copytree(unpacked, broken, copy_function=os.link)  # hard links: fast, and removal stays local
    victims = list(broken.glob(remove))
    assert victims, f"{remove} is not in the package"
    for victim in victims:
        shutil.rmtree(victim) if victim.is_dir() else victim.unlink()
    crippled = Sandbox(broken, sandbox.tmp, sandbox.python, sandbox.runtime, sandbox.allowed_libs, sandbox.env)
    run = crippled.invoke([load_event("direct_single.json")])
    scored = run.returncode == 0 and run.results and run.results[0]["ok"] and "probability" in run.results[0]["response"]
    assert not scored, f"the package scored without {remove}"
    assert evidence in run.stderr + json.dumps(run.results)
    if r_check:
        r = crippled.run(["/var/task/R/bin/Rscript", "-e", "library(stats)"])
        assert r.returncode != 0 and r_check in r.stderr, r
