"""Benchmark of batch scoring (a CSV dropped under inputs/): rows per second and peak memory.

Scores CSVs of increasing size, each in a fresh process, and prints one JSON
object. Memory is bounded if peak RSS stays flat while the file grows: rows
are streamed and scored 10,000 at a time, one R call per chunk.

    .venv/bin/python bench/bench_batch.py [--rows 100000,400000]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

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


def progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def write_csv(path: Path, rows: int, seed: int = 5) -> None:
    rng = random.Random(seed)
    with path.open("w") as fh:
        fh.write("id,gre,gpa,rank\n")
        for i in range(rows):
            # one row in 1,000 is bad, so the error path is part of the figure
            gre = "n/a" if i % 1000 == 999 else rng.randrange(200, 801, 20)
            fh.write(f"a{i},{gre},{rng.uniform(2, 4):.2f},{rng.randint(1, 4)}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,400000", help="comma-separated file sizes")
    args = parser.parse_args()
    if not MODEL.exists():
        subprocess.run(["Rscript", str(ROOT / "models" / "train.R")], check=True)
    runs = []
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
            progress(f"{n:,} rows: {run['rows_per_s']:,} rows/s, peak RSS {run['peak_rss_mb']} MB")
            runs.append(run)
    growth = runs[-1]["peak_rss_mb"] - runs[0]["peak_rss_mb"]
    print(json.dumps({"runs": runs, "peak_rss_growth_mb": round(growth, 1),
                      "rows_ratio": runs[-1]["rows"] / runs[0]["rows"]}, indent=2))


if __name__ == "__main__":
    main()
