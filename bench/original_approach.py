"""The baseline for the benchmarks: how the 2017 post scored, re-expressed.

At start it downloads the model with boto3 into the cache folder (when it is
given an ``s3://`` URI), then starts R through rpy2's robjects layer; per
call it reads the .rds again and builds and evaluates R code strings, then
compares the probability with 0.5. It is a benchmark baseline only (this is
the one file outside rlambda/ that touches rpy2, so that the product's own
code stays out of the comparison).

    original_approach.py MODEL CALLS

MODEL is a local path or ``s3://bucket/key`` (downloaded into
``$MODEL_CACHE_DIR``, default /tmp, as the post did). With CALLS = 0 it
answers once and prints its cold-start phases as JSON (the parent times the
whole process); otherwise it prints warm timings.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time


def main() -> None:
    """Time cold start, warm single rows and a 10,000-row loop of the per-call approach."""
    wall_start = time.time()
    started = time.perf_counter()
    model, calls = sys.argv[1], int(sys.argv[2])
    phases: dict[str, float] = {}
    if model.startswith("s3://"):
        import boto3

        phases["imports_s"] = time.perf_counter() - started
        mark = time.perf_counter()
        bucket, _, key = model[len("s3://"):].partition("/")
        model_path = os.path.join(os.environ.get("MODEL_CACHE_DIR", "/tmp"), os.path.basename(key))
        boto3.client("s3").download_file(bucket, key, model_path)
        phases["model_fetch_s"] = time.perf_counter() - mark
    else:
        model_path = model
    mark = time.perf_counter()
    os.environ.setdefault("R_HOME", "/usr/lib/R")
    from rpy2 import robjects

    r = robjects.r
    phases["r_start_s"] = time.perf_counter() - mark

    def admit(gre: str, gpa: str, rank: str) -> bool:
        r.assign("gre", gre)
        r.assign("gpa", gpa)
        r.assign("rank", rank)
        r(f'fit <- readRDS("{model_path}")')
        r("newdata <- data.frame(gre = as.numeric(gre), gpa = as.numeric(gpa), rank = rank)")
        r('pred <- predict(fit, newdata = newdata, type = "response")')
        return bool(r("pred")[0] > 0.5)

    mark = time.perf_counter()
    answer = admit("800", "4", "1")
    # the post reads the model on every call: its load is part of each answer
    phases["load_and_first_answer_s"] = time.perf_counter() - mark
    cold = time.perf_counter() - started
    if calls == 0:  # cold-start mode: the parent times the whole process
        print(json.dumps({"first_answer": answer, "wall_start": wall_start, "wall_answer": time.time(),
                          "phases": phases}))
        return
    for _ in range(50):
        admit("800", "4", "1")
    times = []
    for i in range(calls):
        t0 = time.perf_counter()
        admit(str(200 + i % 600), "3.5", str(1 + i % 4))
        times.append(time.perf_counter() - t0)
    times.sort()
    print(json.dumps({
        "cold_start_s": cold,
        "warm_p50_ms": statistics.median(times) * 1e3,
        "warm_p99_ms": times[int(len(times) * 0.99) - 1] * 1e3,
        # no batch in the original: 10,000 rows are 10,000 calls
        "batch_10k_ms": sum(times) / len(times) * 10_000 * 1e3,
        "batch_10k_note": f"mean of {calls} single calls x 10,000",
    }))


if __name__ == "__main__":
    main()
