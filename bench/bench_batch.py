"""Benchmark of batch scoring (a CSV dropped under inputs/): rows per second and peak memory.

For each file size (one bad row in 1,000), in the same run and on the same
file: ours (``rlambda.batch.score_file``, a fresh process, model loaded
before the clock starts) and the plain R script a data scientist would
write (``bench/plain_batch.R``: read.csv, predict(type = "response"),
write.csv, run by Rscript; its clock starts at readRDS). Peak RSS is each
process's own maximum. Memory is bounded if our peak stays flat while the
file grows: the file is streamed in chunks of a few megabytes.

    .venv/bin/python bench/bench_batch.py [--rows 1000000,4000000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from benchutil import progress

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "admission.rds"

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from rlambda.app import App
from rlambda.batch import score_file
from rlambda.blobs import DirBlobs
from rlambda.settings import Settings
app = App(Settings(model_uri={model!r}, cache_dir={cache!r}))
model = app.model()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
result = score_file(model, DirBlobs({store!r}), "inputs/rows.csv", tmp_dir={cache!r})
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"rows": result.rows, "scored": result.scored, "failed": result.failed,
                  "seconds": seconds, "rss_before_mb": base / 1024, "peak_rss_mb": peak / 1024}}))
"""


def write_csv(path: Path, rows: int, seed: int = 5) -> None:
    rng = random.Random(seed)
    with path.open("w") as fh:
        fh.write("id,gre,gpa,rank\n")
        for i in range(rows):
            # one row in 1,000 is bad, so the error path is part of the figure
            gre = "n/a" if i % 1000 == 999 else rng.randrange(200, 801, 20)
            fh.write(f"a{i},{gre},{rng.uniform(2, 4):.2f},{rng.randint(1, 4)}\n")


# Runs Rscript as a child and reports the child's peak RSS with its output.
PLAIN = """
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if done.returncode != 0:
    raise SystemExit(done.stderr[-2000:])
out = json.loads(done.stdout.strip().splitlines()[-1])
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps(out))
"""


def plain_r(path: Path, out: Path) -> dict:
    """The plain R script on ``path``: seconds (readRDS to the end of write.csv) and peak RSS."""
    cmd = [sys.executable, "-c", PLAIN, "Rscript", str(ROOT / "bench" / "plain_batch.R"), str(MODEL), str(path), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,4000000", help="comma-separated file sizes")
    args = parser.parse_args()
    if not MODEL.exists():
        subprocess.run(["Rscript", str(ROOT / "models" / "train.R")], check=True)
    runs = []
    progress(f"load average before: {os.getloadavg()}")
    for n in (int(x) for x in args.rows.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
            store = Path(tmp) / "store"
            (store / "inputs").mkdir(parents=True)
            progress(f"writing {n:,} rows")
            write_csv(store / "inputs" / "rows.csv", n)
            size_mb = (store / "inputs" / "rows.csv").stat().st_size / 2**20
            progress(f"scoring {n:,} rows ({size_mb:.1f} MB) in a fresh process")
            code = CHILD.format(root=str(ROOT), model=str(MODEL), cache=str(Path(tmp) / "cache"), store=str(store))
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  env={"LOG_LEVEL": "WARNING", "PATH": "/usr/bin:/bin"})
            if done.returncode != 0:
                raise SystemExit(done.stderr[-2000:])
            run = json.loads(done.stdout.strip().splitlines()[-1])
            assert run["scored"] + run["failed"] == n, run
            run.update(file_mb=round(size_mb, 1), rows_per_s=round(n / run["seconds"]),
                       seconds=round(run["seconds"], 3), peak_rss_mb=round(run["peak_rss_mb"], 1),
                       rss_before_mb=round(run["rss_before_mb"], 1))
            progress(f"ours, {n:,} rows: {run['rows_per_s']:,} rows/s, peak RSS {run['peak_rss_mb']} MB")
            progress(f"plain R script on the same {n:,} rows")
            plain = plain_r(store / "inputs" / "rows.csv", Path(tmp) / "plain.csv")
            plain.update(rows_per_s=round(n / plain["seconds"]), peak_rss_mb=round(plain["peak_rss_mb"], 1))
            progress(f"plain R, {n:,} rows: {plain['rows_per_s']:,} rows/s, peak RSS {plain['peak_rss_mb']} MB")
            run["plain_r"] = plain
            run["speedup_vs_plain_r"] = round(plain["seconds"] / run["seconds"], 2)
            run["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
            runs.append(run)
    growth = runs[-1]["peak_rss_mb"] - runs[0]["peak_rss_mb"]
    print(json.dumps({"runs": runs, "peak_rss_growth_mb": round(growth, 1),
                      "rows_ratio": runs[-1]["rows"] / runs[0]["rows"], "cpus": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
