"""Benchmark of the scoring handler against the original post's approach, in one run.

Prints one JSON object: cold start (new process to first answer, an empty
cache folder per run, the model fetched from a local moto S3 server, as a
new Lambda container fetches it; bench/bench_coldstart.py breaks it into
phases and adds the zip in the sandbox), warm one-row
latency through ``lambda_handler`` (p50, p99), 10,000 rows in one event,
the same figures for the original per-call approach, and the ratios.

    .venv/bin/python bench/bench_handler.py [--calls 3000] [--cold-runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import free_port, progress

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "admission.rds"
BUCKET = "serverless-poc-models"

CHILD = """
import time, json, sys
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
import handler
out = handler.lambda_handler({{"gre": 800, "gpa": 4, "rank": 1}}, None)
assert out["result"] is True, out
print(json.dumps({{"in_process_s": time.perf_counter() - t0}}))
"""


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def cold_starts(env: dict[str, str], runs: int, argv: list[str] | None = None) -> list[float]:
    """Wall time from spawning a new Python to its first answer, each run with an empty cache folder."""
    argv = argv or ["-c", CHILD.format(root=str(ROOT))]
    times = []
    for i in range(runs):
        # a new container's /tmp is empty: nothing downloaded by an earlier run is reused
        run_env = {**env, "MODEL_CACHE_DIR": tempfile.mkdtemp(prefix="bench-cache-")}
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, *argv], env=run_env, capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"cold start run failed:\n{done.stderr[-2000:]}")
        times.append(elapsed)
        progress(f"cold start {i + 1}/{runs}: {elapsed:.3f} s")
    return times


def warm(calls: int) -> dict[str, float]:
    """One row through lambda_handler, then 10,000 rows in one event, in this process."""
    sys.path.insert(0, str(ROOT))
    import handler

    rng = random.Random(1)
    events = [{"gre": rng.randrange(200, 801, 20), "gpa": round(rng.uniform(2, 4), 2), "rank": rng.randint(1, 4)}
              for _ in range(calls)]
    for ev in events[:200]:
        handler.lambda_handler(ev, None)
    times = []
    for ev in events:
        t0 = time.perf_counter()
        handler.lambda_handler(ev, None)
        times.append(time.perf_counter() - t0)
    times.sort()
    batch = {"instances": [events[i % len(events)] for i in range(10_000)]}
    batch_times = []
    for _ in range(15):
        t0 = time.perf_counter()
        out = handler.lambda_handler(batch, None)
        batch_times.append(time.perf_counter() - t0)
    assert len(out["predictions"]) == 10_000
    return {
        "warm_p50_ms": statistics.median(times) * 1e3,
        "warm_p99_ms": percentile(times, 0.99) * 1e3,
        "batch_10k_ms": statistics.median(batch_times) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--cold-runs", type=int, default=7)
    parser.add_argument("--baseline-calls", type=int, default=1000)
    args = parser.parse_args()
    if not MODEL.exists():
        subprocess.run(["Rscript", str(ROOT / "models" / "train.R")], check=True)

    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "MODEL_URI": f"s3://{BUCKET}/admission.rds", "MODEL_CACHE_DIR": tempfile.mkdtemp(prefix="bench-cache-"),
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    try:
        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        s3.upload_file(str(MODEL), BUCKET, "admission.rds")
        progress("one untimed cold start (page cache, .pyc files)")
        cold_starts(env, 1)
        progress("cold starts, each downloading the model into an empty cache")
        cold = cold_starts(env, args.cold_runs)
        progress("baseline cold starts (the post's approach: boto3 download, then robjects), same measure")
        base_cold = cold_starts(env, args.cold_runs,
                                [str(ROOT / "bench" / "original_approach.py"), f"s3://{BUCKET}/admission.rds", "0"])
        progress(f"warm: {args.calls} single rows, then 15 x 10,000 rows")
        ours = {"cold_start_s": statistics.median(cold), **warm(args.calls)}
    finally:
        server.stop()

    progress(f"baseline (original per-call approach): {args.baseline_calls} calls in a new process")
    base_runs = []
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "original_approach.py"), str(MODEL), str(args.baseline_calls)],
            capture_output=True, text=True, check=True)
        base_runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    baseline = {k: statistics.median(r[k] for r in base_runs) for k in ("warm_p50_ms", "warm_p99_ms", "batch_10k_ms")}
    baseline["cold_start_s"] = statistics.median(base_cold)
    baseline["batch_10k_note"] = base_runs[0]["batch_10k_note"]

    targets = {"warm_p50_ms": 0.4, "batch_10k_ms": 20.0, "cold_start_s": 0.6}
    result = {
        "ours": {k: round(v, 4) for k, v in ours.items()},
        "original_approach": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in baseline.items()},
        "speedup": {k: round(baseline[k] / ours[k], 1) for k in ("warm_p50_ms", "warm_p99_ms", "batch_10k_ms", "cold_start_s")},
        "targets": targets,
        "meets_targets": {
            "warm_p50_ms": ours["warm_p50_ms"] <= targets["warm_p50_ms"],
            "warm_p50_5x_original": baseline["warm_p50_ms"] / ours["warm_p50_ms"] >= 5,
            "batch_10k_ms": ours["batch_10k_ms"] <= targets["batch_10k_ms"],
            "cold_start_s": ours["cold_start_s"] <= targets["cold_start_s"],
        },
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "loadavg": [round(x, 2) for x in os.getloadavg()]},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
