"""Figures of the deployment zip, printed as one JSON object.

Sizes and the GLIBC floor come from build/admission.report.json (written by
scripts/package.sh; the zip is rebuilt first if missing or stale). Cold start is measured
in the Lambda-like bubblewrap sandbox of tests/sandbox.py: a new runtime
process, from just before it is spawned to the handler's first answer, with
the model already in the /tmp cache (one warm-up process fetched it from a
moto S3 server). Progress goes to stderr.

    .venv/bin/python bench/bench_package.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from sandbox import Sandbox, ensure_package  # noqa: E402

ZIP = ROOT / "build" / "admission.zip"
REPORT = ROOT / "build" / "admission.report.json"
MODEL = ROOT / "models" / "admission.rds"
BUCKET, KEY = "serverless-poc-models", "admission.rds"
COLD_START_TARGET_S = 0.8


def log(msg: str) -> None:
    """Progress on stderr; stdout carries only the JSON result."""
    print(f"bench_package: {msg}", file=sys.stderr, flush=True)


def s3_server() -> tuple[Any, str]:
    """A moto S3 server on 127.0.0.1 holding the model."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket=BUCKET)
    s3.upload_file(str(MODEL), BUCKET, KEY)
    return server, endpoint


def summary(values: list[float]) -> dict[str, float]:
    """Median, min and max, in seconds, rounded to the millisecond."""
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def cold_starts(sandbox: Sandbox, event: dict[str, Any], runs: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``runs`` fresh processes, each answering one event."""
    firsts, inits, rs = [], [], []
    for _ in range(runs):
        run = sandbox.invoke([event], env)
        try:
            responses = run.responses()
            assert "probability" in responses[0], responses
        except AssertionError as exc:
            # Reported, not raised: e.g. R_DEFAULT_PACKAGES=NULL leaves stats
            # unattached and the R helpers cannot find terms().
            first_error = str(exc).splitlines()[0][:600]
            return {"runs": 0, "fails": first_error}
        firsts.append(run.timing["cold_start_s"])
        inits.append(run.timing["init_s"])
        rs.append(run.timing["cold_start_s"] - run.timing["init_s"])
    return {
        "runs": runs,
        "new_process_to_first_answer_s": summary(firsts),
        "new_process_to_handler_imported_s": summary(inits),
        "first_invoke_s": summary(rs),
    }


def rscript_time(sandbox: Sandbox, runs: int) -> dict[str, float]:
    """What rpy2's import-time `Rscript -e 'cat(Sys.getenv("LD_LIBRARY_PATH"))'` costs."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run = sandbox.run(["/var/task/R/bin/Rscript", "-e", 'cat(Sys.getenv("LD_LIBRARY_PATH"))'])
        times.append(time.perf_counter() - t)
        assert run.returncode == 0, run.stderr
    return summary(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="cold processes per configuration")
    args = parser.parse_args()
    ensure_package(log)
    report = json.loads(REPORT.read_text())
    event = json.loads((ROOT / "tests" / "events" / "direct_single.json").read_text())
    server, endpoint = s3_server()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-package-") as tmp:
            task = Path(tmp) / "task"
            with zipfile.ZipFile(ZIP) as zf:
                for info in zf.infolist():
                    zf.extract(info, task)
                    if info.external_attr >> 16:
                        (task / info.filename).chmod((info.external_attr >> 16) & 0o7777)
            sandbox = Sandbox.create(task, Path(tmp) / "lambda-tmp", {
                "MODEL_URI": f"s3://{BUCKET}/{KEY}", "AWS_ENDPOINT_URL": endpoint, "MODEL_CACHE_DIR": "/tmp",
            })
            log("warm-up: fetch the model into the sandbox's /tmp")
            sandbox.invoke([event]).responses()
            log(f"cold starts x{args.runs} (default packages)")
            default = cold_starts(sandbox, event, args.runs)
            log(f"cold starts x{args.runs} (R_DEFAULT_PACKAGES=NULL)")
            no_defaults = cold_starts(sandbox, event, args.runs, {"R_DEFAULT_PACKAGES": "NULL"})
            log("Rscript round trip")
            rscript = rscript_time(sandbox, args.runs)
    finally:
        server.stop()
    components = sorted(report["components"], key=lambda c: -c["bytes"])
    above = {f: v for f, v in report["glibc_by_file"].items()
             if tuple(map(int, v.split("."))) > tuple(map(int, report["lambda_glibc"].split(".")))}
    cold = default["new_process_to_first_answer_s"]["median"]
    print(json.dumps({
        "zip_bytes": report["zip_bytes"],
        "zip_mb": round(report["zip_bytes"] / 2**20, 1),
        "unzipped_bytes": report["unzipped_bytes"],
        "unzipped_mb": round(report["unzipped_bytes"] / 2**20, 1),
        "files": sum(c["files"] for c in components),
        "largest_components": [{**c, "mb": round(c["bytes"] / 2**20, 2)} for c in components[:5]],
        "full_icu": report.get("full_icu"),
        "glibc_floor": report["glibc_floor"],
        "lambda_glibc": report["lambda_glibc"],
        "glibc_above_target": above,
        "python": report["python"],
        "r_version": report["r_version"],
        "rpy2": report["rpy2"],
        "cold_start_sandbox": default,
        "cold_start_sandbox_r_default_packages_null": no_defaults,
        "rscript_at_rpy2_import_s": rscript,
        "targets": {
            "zip_mb_max": 25, "zip_ok": report["zip_bytes"] <= 25 * 2**20,
            "unzipped_mb_max": 100, "unzipped_ok": report["unzipped_bytes"] <= 100 * 2**20,
            "cold_start_s_max": COLD_START_TARGET_S, "cold_start_ok": cold <= COLD_START_TARGET_S,
        },
    }, indent=1))


if __name__ == "__main__":
    main()
