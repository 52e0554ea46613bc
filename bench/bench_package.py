"""Figures of the Lambda zip against the zip of before issue 11, measured in the same run, as JSON.

Both zips are built here, now: the current one by scripts/package.sh (R 4.5
built in a Debian 11 root, cached under build/cache; rpy2 ABI mode, CPython
3.12), the baseline by the package.sh of BASELINE_REF (exported with
``git archive`` into a temporary folder: Debian's R 4.2 copied from this
machine, rpy2 API mode for the venv's CPython 3.11). For each: zip size,
GLIBC floor, and cold start in the Lambda-like bubblewrap sandbox of
tests/sandbox.py (a new runtime process, from just before it is spawned to
the handler's first answer, the model already in /tmp; wall time, and the
runtime process's CPU time (its own and its children's, read by the
bootstrap), which a busy machine disturbs less), each on the Python the zip
is built for. The current zip's cold start is also measured under Lambda's
own runtime client (awslambdaric against tests/runtime_api.py). Build times:
a cached rebuild (warm build/cache), and with --from-nothing a build with an
empty cache (debootstrap, apt-get, R's configure/make, the wheels; several
minutes). Progress goes to stderr; the load average is printed with the figures.

    .venv/bin/python bench/bench_package.py [--runs 7] [--from-nothing]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from sandbox import Sandbox, base_python, ensure_package, find_python  # noqa: E402
from test_lambda_runtime import run_runtime_client  # noqa: E402

ZIP = ROOT / "build" / "admission.zip"
REPORT = ROOT / "build" / "admission.report.json"
MODEL = ROOT / "models" / "admission.rds"
# The last commit before issue 11: the zip of Debian's R 4.2 (GLIBC 2.36 floor).
BASELINE_REF = "d61996b"
TARGETS = {"zip_mb_max": 12, "glibc_floor_max": "2.34", "build_from_nothing_s_max": 600,
           "cached_rebuild_s_max": 30, "cold_start_s_max": 0.4}


def log(msg: str) -> None:
    """Progress on stderr; stdout carries only the JSON result."""
    print(f"bench_package: {msg}", file=sys.stderr, flush=True)


def summary(values: list[float]) -> dict[str, float]:
    """Median, min and max, in seconds, rounded to the millisecond."""
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def unpack(zip_path: Path, task: Path) -> Path:
    """The zip unpacked as Lambda unpacks it, modes kept."""
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            zf.extract(info, task)
            if info.external_attr >> 16:
                (task / info.filename).chmod((info.external_attr >> 16) & 0o7777)
    return task


def cold_starts(sandbox: Sandbox, event: dict[str, Any], runs: int) -> dict[str, Any]:
    """``runs`` fresh processes (the stand-in bootstrap), each answering one event."""
    sandbox.invoke([event]).responses()  # warm-up: page cache, model in /tmp
    firsts, inits, cpus = [], [], []
    for _ in range(runs):
        run = sandbox.invoke([event])
        cpus.append(run.timing["cpu_s"])
        assert "probability" in run.responses()[0]
        firsts.append(run.timing["cold_start_s"])
        inits.append(run.timing["init_s"])
    return {"runs": runs, "new_process_to_first_answer_s": summary(firsts),
            "new_process_to_handler_imported_s": summary(inits), "cpu_s": summary(cpus)}


def cold_starts_ric(sandbox: Sandbox, event: dict[str, Any], runs: int) -> dict[str, Any]:
    """``runs`` fresh `python -m awslambdaric` processes, each answering one event from the Runtime API."""
    firsts = []
    for _ in range(runs):
        outcomes, _, log_text, first = run_runtime_client(sandbox, [event])
        assert outcomes and outcomes[0].kind == "response" and "probability" in outcomes[0].body, log_text[-2000:]
        firsts.append(first)
    return {"runs": runs, "new_process_to_first_answer_s": summary(firsts)}


def timed_build(args: list[str], env: dict[str, str]) -> float:
    """Seconds one scripts/package.sh run takes; raises with its output on failure."""
    t = time.perf_counter()
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "package.sh"), *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"package.sh failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return round(time.perf_counter() - t, 1)


def baseline_zip(tmp: Path) -> tuple[Path, dict[str, Any]]:
    """The zip of BASELINE_REF, built now by that commit's own package.sh."""
    tree = tmp / "baseline"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", BASELINE_REF], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    (tree / ".venv").symlink_to(ROOT / ".venv")
    out = tree / "build" / "admission.zip"
    proc = subprocess.run(["bash", str(tree / "scripts" / "package.sh"), "--out", str(out)], cwd=tree,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"baseline package.sh failed:\n{proc.stderr[-2000:]}")
    return out, json.loads((tree / "build" / "admission.report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="cold processes per zip")
    parser.add_argument("--from-nothing", action="store_true", help="also time a build with an empty cache (minutes)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    ensure_package(log)
    report = json.loads(REPORT.read_text())
    event = json.loads((ROOT / "tests" / "events" / "direct_single.json").read_text())
    python = find_python(report["python"])
    if python is None:
        sys.exit(f"bench_package: no CPython {report['python']} here (pyenv or PATH)")
    result: dict[str, Any] = {"load_avg_before": [round(x, 2) for x in load_before], "baseline_ref": BASELINE_REF}
    with tempfile.TemporaryDirectory(prefix="bench-package-") as tmp_name:
        tmp = Path(tmp_name)
        log("cached rebuild (warm build/cache)")
        result["cached_rebuild_s"] = timed_build(["--out", str(tmp / "again.zip")], {})
        if args.from_nothing:
            log("build from nothing (empty R_BUILD_CACHE): debootstrap, apt-get, R, wheels; several minutes")
            result["build_from_nothing_s"] = timed_build(["--out", str(tmp / "fresh.zip")],
                                                         {"R_BUILD_CACHE": str(tmp / "empty-cache")})
            shutil.rmtree(tmp / "empty-cache", ignore_errors=True)
        log(f"baseline zip ({BASELINE_REF})")
        base_zip, base_report = baseline_zip(tmp)
        env = {"MODEL_URI": "/tmp/admission.rds", "MODEL_CACHE_DIR": "/tmp"}
        zips = {"current": (ZIP, report, python), "baseline": (base_zip, base_report, base_python())}
        for name, (zip_path, rep, py) in zips.items():
            lambda_tmp = tmp / f"{name}-tmp"
            lambda_tmp.mkdir()
            shutil.copy(MODEL, lambda_tmp / "admission.rds")
            sandbox = Sandbox.create(unpack(zip_path, tmp / f"{name}-task"), lambda_tmp, env, python=py)
            log(f"{name}: cold starts x{args.runs} on python{rep['python']}")
            figures: dict[str, Any] = {
                "zip_bytes": rep["zip_bytes"], "zip_mb": round(rep["zip_bytes"] / 2**20, 1),
                "unzipped_mb": round(rep["unzipped_bytes"] / 2**20, 1), "glibc_floor": rep["glibc_floor"],
                "glibcxx_floor": rep.get("glibcxx_floor", "not measured"),
                "python": rep["python"], "r_version": rep["r_version"], "rpy2": rep["rpy2"],
                "cold_start_sandbox": cold_starts(sandbox, event, args.runs),
            }
            if name == "current":
                log(f"{name}: cold starts x{args.runs} under awslambdaric")
                figures["cold_start_awslambdaric"] = cold_starts_ric(sandbox, event, args.runs)
            result[name] = figures
    cur = result["current"]
    cold = cur["cold_start_sandbox"]["new_process_to_first_answer_s"]["median"]
    result["targets"] = {
        **TARGETS,
        "zip_ok": cur["zip_mb"] <= TARGETS["zip_mb_max"],
        "glibc_ok": tuple(map(int, cur["glibc_floor"].split("."))) <= (2, 34),
        "cached_rebuild_ok": result["cached_rebuild_s"] <= TARGETS["cached_rebuild_s_max"],
        "build_from_nothing_ok": (result["build_from_nothing_s"] <= TARGETS["build_from_nothing_s_max"]
                                  if "build_from_nothing_s" in result else "not measured (--from-nothing)"),
        "cold_start_ok": cold <= TARGETS["cold_start_s_max"],
    }
    result["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
