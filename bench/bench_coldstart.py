"""Cold start as Lambda sees it: a new process, an empty cache, the model in S3 over HTTP.

Each run spawns a new Python that imports ``handler`` (Lambda's init) and
answers one direct invocation; the time is from before the spawn to the
first answer. The model is in a bucket of moto's S3 server, run as its own
process on 127.0.0.1, and every run gets an empty cache folder, as a new
Lambda container has an empty /tmp. Measured the same way in the same run,
the runs interleaved so that each sees the same machine:

* ``ours``: handler.py from this tree (the machine's R, the venv's Python);
* ``original_approach``: the 2017 post's way (bench/original_approach.py):
  boto3 downloads the model to the cache folder, then rpy2's robjects
  starts R, reads the .rds and predicts;
* ``zip_in_sandbox``: build/admission.zip unpacked and run by
  tests/sandbox.py's stand-in for Lambda's bootstrap in bubblewrap (no
  system R, Lambda's environment), when the zip exists.

Prints one JSON object: medians, every run, the CPU time of each process,
the phases (interpreter, imports, R start, model fetch, model load, first
answer), the ratios and the load average before and after. Phases of ours overlap: R starts on the
main thread while a helper thread imports the rest of the service (rlambda/coldstart.py), so
init.imports_ms and init.r_start_ms do not add up; the model is fetched beside R's start too (init.fetch_ms).

    .venv/bin/python bench/bench_coldstart.py [--runs 9] [--zip build/admission.zip] [--compare-tree DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

from benchutil import free_port, progress

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "admission.rds"
BUCKET = "bench-coldstart-models"
KEY = "admission.rds"
EVENT = {"gre": 800, "gpa": 4, "rank": 1}

# The handler's phases: handler.py's import is Lambda's init (its own imports
# run beside R's start, so they are timed inside it: init_ms.imports_ms).
CHILD = """
import time
wall_start = time.time()
t0 = time.perf_counter()
import json, sys
sys.path.insert(0, {root!r})
t1 = time.perf_counter()
import handler
t2 = time.perf_counter()
out = handler.lambda_handler({event!r}, None)
t3 = time.perf_counter()
print(json.dumps({{"first_answer": out.get("result"), "wall_start": wall_start, "wall_answer": time.time(),
                  "phases": {{"imports_s": t1 - t0, "init_s": t2 - t1, "first_answer_s": t3 - t2}},
                  "init_ms": handler.app.init_phases}}))
"""


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3 server in a process of its own on 127.0.0.1, and its URL."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", "import sys; from moto.server import main; main(sys.argv[1:])",
         "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise SystemExit("moto's server did not start")


def children_cpu() -> float:
    """User + system CPU seconds of every child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Spawn, wait for the first answer, and return the child's report plus the wall and CPU times."""
    cpu0 = children_cpu()
    wall_spawn = time.time()
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    exited = time.perf_counter() - t0
    cpu = children_cpu() - cpu0
    if done.returncode != 0:
        raise SystemExit(f"cold start run failed: {argv[:3]}\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report.get("first_answer") is not True:
        raise SystemExit(f"wrong first answer: {report}")
    phases = {"interpreter_s": report["wall_start"] - wall_spawn, **report.get("phases", {})}
    return {"cold_start_s": report["wall_answer"] - wall_spawn, "process_exit_s": exited, "cpu_s": cpu,
            "phases": phases, "init_ms": report.get("init_ms")}


class Zip:
    """build/admission.zip unpacked once, run per cold start in a new sandbox /tmp."""

    def __init__(self, path: Path, endpoint: str, scratch: Path) -> None:
        sys.path.insert(0, str(ROOT / "tests"))
        from sandbox import Sandbox, base_python, find_python

        self.path = path
        # the zip's compiled extensions are for one CPython: its report names it
        report_path = path.with_name(path.name.removesuffix(".zip") + ".report.json")
        self.report = json.loads(report_path.read_text()) if report_path.exists() else {}
        python = find_python(self.report["python"]) if self.report.get("python") else base_python()
        if python is None:
            raise SystemExit(f"no CPython {self.report['python']} here for {path} (pyenv or PATH)")
        task_root = scratch / "task"
        with zipfile.ZipFile(path) as zf:
            self.names = set(zf.namelist())
            zf.extractall(task_root)
        # zipfile drops the execute bits R's front ends need
        for info in zipfile.ZipFile(path).infolist():
            mode = info.external_attr >> 16
            if mode:
                os.chmod(task_root / info.filename, mode & 0o7777)
        self.scratch = scratch
        env = {"MODEL_URI": f"s3://{BUCKET}/{KEY}", "AWS_ENDPOINT_URL": endpoint, "LOG_LEVEL": "WARNING"}
        self.sandbox = Sandbox.create(task_root, scratch / "tmp-0", env, python=python)
        self.count = 0

    def describe(self) -> dict[str, Any]:
        """Which zip: its size, time and whether it carries this tree's start-up code."""
        stat = self.path.stat()
        return {"path": str(self.path), "bytes": stat.st_size,
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stat.st_mtime)),
                "python": self.report.get("python"), "r_version": self.report.get("r_version"),
                "has_this_trees_warm_up": "rlambda/snapstart.py" in self.names}

    def cold_start(self) -> dict[str, Any]:
        """One invocation in a fresh process with an empty /tmp."""
        self.count += 1
        sandbox = dataclasses.replace(self.sandbox, tmp=self.scratch / f"tmp-{self.count}")
        sandbox.tmp.mkdir()
        run = sandbox.invoke([EVENT])
        response = run.responses()[0]
        if response.get("result") is not True:
            raise SystemExit(f"wrong answer from the zip: {response}")
        t = run.timing
        # no CPU figure: the sandboxed process is reaped inside bwrap's PID
        # namespace, so its CPU never reaches this process's RUSAGE_CHILDREN
        return {"cold_start_s": t["cold_start_s"], "cpu_s": None, "phases": {
            "interpreter_s": t["process_start_s"], "init_s": t["init_s"] - t["process_start_s"],
            "first_answer_s": t["cold_start_s"] - t["init_s"]}}


def median_phases(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = runs[0]["phases"].keys()
    out = {k: round(statistics.median(r["phases"][k] for r in runs), 4) for k in keys}
    init = [r["init_ms"] for r in runs if r.get("init_ms")]
    if init:
        for k in init[0]:
            out[f"init.{k}"] = round(statistics.median(i.get(k, float("nan")) for i in init), 2)
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    times = [r["cold_start_s"] for r in runs]
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
            "max_s": round(max(times), 4), "runs_s": [round(t, 4) for t in times],
            # CPU of the whole process (start to exit, R's shutdown included): what a
            # busy machine cannot hide, and about the wall time on one idle core
            "median_cpu_s": (round(statistics.median(r["cpu_s"] for r in runs), 4)
                             if runs[0]["cpu_s"] is not None else None),
            "median_phases": median_phases(runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="runs of each (at least 7)")
    parser.add_argument("--zip", type=Path, default=ROOT / "build" / "admission.zip")
    parser.add_argument("--no-zip", action="store_true", help="skip the zip even if it exists")
    parser.add_argument("--compare-tree", type=Path, action="append", default=[],
                        help="another checkout of this project (e.g. a git worktree of an older commit), "
                             "measured as ours is, interleaved in the same run")
    args = parser.parse_args()
    if args.runs < 7:
        raise SystemExit("--runs must be at least 7")
    if not MODEL.exists():
        subprocess.run(["Rscript", str(ROOT / "models" / "train.R")], check=True)
    load_before = os.getloadavg()

    import boto3

    server, endpoint = start_moto()
    scratch = Path(tempfile.mkdtemp(prefix="bench-coldstart-"))
    try:
        creds = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
        s3.create_bucket(Bucket=BUCKET)
        s3.upload_file(str(MODEL), BUCKET, KEY)
        # PYTHONDONTWRITEBYTECODE dropped: the untimed run writes the .pyc files
        # of this tree, so that no run of ours compiles its modules (the zip
        # ships them; the baseline's libraries have theirs in the venv)
        base_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("AWS_", "MODEL_", "R_")) and k != "PYTHONDONTWRITEBYTECODE"}
        base_env.update(creds, AWS_ENDPOINT_URL=endpoint, LOG_LEVEL="WARNING")

        def fresh_cache() -> str:
            return tempfile.mkdtemp(prefix="cache-", dir=scratch)

        def tree(root: Path) -> Callable[[], dict[str, Any]]:
            def run() -> dict[str, Any]:
                env = {**base_env, "MODEL_URI": f"s3://{BUCKET}/{KEY}", "MODEL_CACHE_DIR": fresh_cache()}
                return run_child([sys.executable, "-c", CHILD.format(root=str(root), event=EVENT)], env)
            return run

        ours = tree(ROOT)

        def original() -> dict[str, Any]:
            env = {**base_env, "MODEL_CACHE_DIR": fresh_cache()}
            return run_child([sys.executable, str(ROOT / "bench" / "original_approach.py"), f"s3://{BUCKET}/{KEY}", "0"],
                             env)

        approaches: dict[str, Callable[[], dict[str, Any]]] = {"ours": ours, "original_approach": original}
        for other in args.compare_tree:
            approaches[f"tree:{other.resolve().name}"] = tree(other.resolve())
        zipped: Zip | None = None
        if args.no_zip:
            zip_note = "skipped (--no-zip)"
        elif args.zip.exists():
            progress(f"unpacking {args.zip}")
            zipped = Zip(args.zip, endpoint, scratch / "zip")
            approaches["zip_in_sandbox"] = zipped.cold_start
            zip_note = zipped.describe()
        else:
            zip_note = f"not measured: {args.zip} does not exist (make package builds it)"
        progress("one untimed run of each (page cache, .pyc files)")
        for fn in approaches.values():
            fn()
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in approaches}
        names = list(approaches)
        for i in range(args.runs):
            # rotate the order so that no approach always runs first
            for name in names[i % len(names):] + names[: i % len(names)]:
                results[name].append(approaches[name]())
            progress(f"run {i + 1}/{args.runs}: " + ", ".join(
                f"{n} {results[n][-1]['cold_start_s']:.3f} s" for n in names))
    finally:
        server.terminate()
        server.wait(timeout=10)
    load_after = os.getloadavg()

    out: dict[str, Any] = {name: summary(runs) for name, runs in results.items()}
    ours_s = out["ours"]["median_s"]
    base_s = out["original_approach"]["median_s"]
    out["ratio_ours_to_original"] = round(ours_s / base_s, 3)
    out["speedup"] = round(base_s / ours_s, 2)
    out["cpu_ratio_ours_to_original"] = round(out["ours"]["median_cpu_s"] / out["original_approach"]["median_cpu_s"], 3)
    for name in list(out):
        if name.startswith("tree:"):
            out[f"ratio_ours_to_{name}"] = round(ours_s / out[name]["median_s"], 3)
    out["zip"] = zip_note
    targets = {"ratio_ours_to_original": 0.45, "ours_s_idle_machine": 0.15, "zip_in_sandbox_s": 0.25}
    meets: dict[str, Any] = {"ratio_ours_to_original": out["ratio_ours_to_original"] <= targets["ratio_ours_to_original"],
                             "ours_s": ours_s <= targets["ours_s_idle_machine"]}
    if "zip_in_sandbox" in out:
        meets["zip_in_sandbox_s"] = out["zip_in_sandbox"]["median_s"] <= targets["zip_in_sandbox_s"]
    out["targets"] = targets
    out["meets_targets"] = meets
    out["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                      "loadavg_before": [round(x, 2) for x in load_before],
                      "loadavg_after": [round(x, 2) for x in load_after]}
    out["bytecode"] = "cached for all: the untimed run writes the .pyc files, as the zip ships them"
    out["baseline_includes"] = ("boto3 import and download of the model into an empty cache folder, rpy2 robjects "
                                "import (R start, with rpy2's Rscript subprocess), readRDS and predict")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
