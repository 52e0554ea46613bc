"""Benchmark of batch scoring (a CSV dropped under inputs/): rows per second and peak memory.

For each file size (one bad row in 1,000), in the same run and on the same
file, ``--repeat`` rounds (default 3), each round one run of ours then one
of the plain R script, each in a fresh process:

- ours: ``rlambda.batch.score_file`` with the model loaded before the clock
  starts. The clock includes the first call's loading of data.table and
  batch.R (a new process, like a Lambda container's first file). The same
  process then scores the file a second time ("warm": what a container that
  has already scored a file does), reported apart.
- the plain R script a data scientist would write (``bench/plain_batch.R``:
  read.csv, predict(type = "response"), write.csv, run by Rscript; its
  clock starts at readRDS).

Both are single-threaded: batch.R passes nThread = 1 to fread and fwrite,
base R's read.csv and write.csv are single-threaded, and the BLAS is
printed. The CPU seconds of each timed section are measured next to its
wall seconds (CPU / wall above 1 would mean more than one busy thread).
The figures are medians over the rounds; the ratio is the plain script's
median seconds over ours. Peak RSS is each process's own maximum (ours:
after the cold run); memory is bounded if our peak stays flat while the
file grows. Load averages are printed before and after each size.

    .venv/bin/python bench/bench_batch.py [--rows 1000000,4000000] [--repeat 3] [--many-distinct]
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
from pathlib import Path

from benchutil import progress

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "admission.rds"

CHILD = """
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
from rlambda.app import App
from rlambda.batch import score_file
from rlambda.blobs import DirBlobs
from rlambda.settings import Settings
app = App(Settings(model_uri={model!r}, cache_dir={cache!r}))
model = app.model()

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

def run():
    c0, t0 = cpu(), time.perf_counter()
    result = score_file(model, DirBlobs({store!r}), "inputs/rows.csv", tmp_dir={cache!r})
    return result, time.perf_counter() - t0, cpu() - c0

base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result, seconds, cpu_s = run()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
_, warm, warm_cpu = run()
print(json.dumps({{"rows": result.rows, "scored": result.scored, "failed": result.failed,
                  "seconds": seconds, "cpu_seconds": cpu_s, "warm_seconds": warm, "warm_cpu_seconds": warm_cpu,
                  "rss_before_mb": base / 1024, "peak_rss_mb": peak / 1024}}))
"""


def write_csv(path: Path, rows: int, seed: int = 5, many: bool = False) -> None:
    """The benchmark's file; ``many``: numbers with many distinct values (gre any integer, gpa 4 decimals)."""
    rng = random.Random(seed)
    with path.open("w") as fh:
        fh.write("id,gre,gpa,rank\n")
        for i in range(rows):
            # one row in 1,000 is bad, so the error path is part of the figure
            gre = "n/a" if i % 1000 == 999 else rng.randrange(200, 801, 1 if many else 20)
            gpa = f"{rng.uniform(2, 4):.4f}" if many else f"{rng.uniform(2, 4):.2f}"
            fh.write(f"a{i},{gre},{gpa},{rng.randint(1, 4)}\n")


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


def ours(store: Path, cache: Path) -> dict:
    """score_file on ``store``'s inputs/rows.csv in a fresh process: cold and warm seconds, CPU, peak RSS."""
    code = CHILD.format(root=str(ROOT), model=str(MODEL), cache=str(cache), store=str(store))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"LOG_LEVEL": "WARNING", "PATH": "/usr/bin:/bin"})
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def plain_r(path: Path, out: Path) -> dict:
    """The plain R script on ``path``: seconds and CPU seconds (readRDS to the end of write.csv), peak RSS."""
    cmd = [sys.executable, "-c", PLAIN, "Rscript", str(ROOT / "bench" / "plain_batch.R"), str(MODEL), str(path), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def r_threads() -> dict:
    """What decides R's threads here: the BLAS, and data.table's default (batch.R passes nThread = 1 anyway)."""
    code = ('si <- sessionInfo(); cat(si$BLAS, "\\n", sep = ""); '
            'cat(data.table::getDTthreads(), "\\n", sep = ""); cat(R.version.string, "\\n", sep = "")')
    done = subprocess.run(["Rscript", "-e", code], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    lines = done.stdout.split("\n")
    return {"blas": lines[0], "data_table_default_threads": lines[1] if len(lines) > 1 else "",
            "r": lines[2] if len(lines) > 2 else "", "batch_r_nthread": 1}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,4000000", help="comma-separated file sizes")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per size (ours, then the plain script)")
    parser.add_argument("--many-distinct", action="store_true",
                        help="numbers with many distinct values (gre 601, gpa 20,001): batch.R then parses "
                             "every cell, not each distinct value once")
    args = parser.parse_args()
    if not MODEL.exists():
        subprocess.run(["Rscript", str(ROOT / "models" / "train.R")], check=True)
    threads = r_threads()
    progress(f"threads: ours 1 (batch.R: fread/fwrite nThread = 1), plain R 1; BLAS {threads['blas']}")
    runs = []
    for n in (int(x) for x in args.rows.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
            store = Path(tmp) / "store"
            (store / "inputs").mkdir(parents=True)
            progress(f"writing {n:,} rows")
            write_csv(store / "inputs" / "rows.csv", n, many=args.many_distinct)
            size_mb = (store / "inputs" / "rows.csv").stat().st_size / 2**20
            before = loadavg()
            progress(f"{n:,} rows ({size_mb:.1f} MB), load average {before}")
            rounds = []
            for i in range(args.repeat):
                run = ours(store, Path(tmp) / "cache")
                assert run["scored"] + run["failed"] == n, run
                plain = plain_r(store / "inputs" / "rows.csv", Path(tmp) / "plain.csv")
                rounds.append({"ours": run, "plain_r": plain, "loadavg": loadavg()})
                progress(f"  round {i + 1}: ours {n / run['seconds']:,.0f} rows/s cold, "
                         f"{n / run['warm_seconds']:,.0f} warm (1 thread, CPU/wall {run['cpu_seconds'] / run['seconds']:.2f}), "
                         f"peak {run['peak_rss_mb']:.1f} MB; plain R {n / plain['seconds']:,.0f} rows/s "
                         f"(1 thread, CPU/wall {plain['cpu_seconds'] / plain['seconds']:.2f}), peak {plain['peak_rss_mb']:.1f} MB; "
                         f"ratio {plain['seconds'] / run['seconds']:.2f}x; load {rounds[-1]['loadavg']}")
            med = statistics.median(r["ours"]["seconds"] for r in rounds)
            warm = statistics.median(r["ours"]["warm_seconds"] for r in rounds)
            plain_med = statistics.median(r["plain_r"]["seconds"] for r in rounds)
            summary = {
                "rows": n, "file_mb": round(size_mb, 1), "threads": {"ours": 1, "plain_r": 1},
                "ours": {"seconds": round(med, 3), "rows_per_s": round(n / med),
                         "warm_seconds": round(warm, 3), "warm_rows_per_s": round(n / warm),
                         "cpu_per_wall": round(statistics.median(r["ours"]["cpu_seconds"] / r["ours"]["seconds"]
                                                                 for r in rounds), 2),
                         "peak_rss_mb": round(max(r["ours"]["peak_rss_mb"] for r in rounds), 1),
                         "rss_before_mb": round(rounds[0]["ours"]["rss_before_mb"], 1)},
                "plain_r": {"seconds": round(plain_med, 3), "rows_per_s": round(n / plain_med),
                            "cpu_per_wall": round(statistics.median(r["plain_r"]["cpu_seconds"] / r["plain_r"]["seconds"]
                                                                    for r in rounds), 2),
                            "peak_rss_mb": round(max(r["plain_r"]["peak_rss_mb"] for r in rounds), 1)},
                "speedup_vs_plain_r": round(plain_med / med, 2),
                "speedup_per_round": [round(r["plain_r"]["seconds"] / r["ours"]["seconds"], 2) for r in rounds],
                "loadavg_before": before, "loadavg_after": loadavg(),
                "rounds": [{"ours_s": round(r["ours"]["seconds"], 3), "ours_warm_s": round(r["ours"]["warm_seconds"], 3),
                            "plain_r_s": round(r["plain_r"]["seconds"], 3), "loadavg": r["loadavg"]} for r in rounds],
            }
            progress(f"{n:,} rows, medians of {args.repeat}: ours {summary['ours']['rows_per_s']:,} rows/s "
                     f"(warm {summary['ours']['warm_rows_per_s']:,}), plain R {summary['plain_r']['rows_per_s']:,} rows/s, "
                     f"{summary['speedup_vs_plain_r']}x, both 1 thread; peak RSS {summary['ours']['peak_rss_mb']} / "
                     f"{summary['plain_r']['peak_rss_mb']} MB; load {before} -> {summary['loadavg_after']}")
            runs.append(summary)
    growth = runs[-1]["ours"]["peak_rss_mb"] - runs[0]["ours"]["peak_rss_mb"]
    print(json.dumps({"runs": runs, "many_distinct": args.many_distinct, "peak_rss_growth_mb": round(growth, 1),
                      "rows_ratio": runs[-1]["rows"] / runs[0]["rows"], "cpus": os.cpu_count(), "r_threads": threads},
                     indent=2))


if __name__ == "__main__":
    main()
