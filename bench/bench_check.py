"""What the load-time check against R's own predict costs a cold start.

Each run is a new process that starts R (not timed), then times the first
load of the admission model: ``rsession.RModel(path)`` with the check (as
served) or ``RModel(path, check=False)``. Runs alternate between the two, so
both see the same machine state; the figures are medians over the runs.

    .venv/bin/python bench/bench_check.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "admission.rds"

CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from rlambda import rsession
rsession.start()
t0 = time.perf_counter()
m = rsession.RModel({model!r}, check={check!r})
load_ms = (time.perf_counter() - t0) * 1e3
t0 = time.perf_counter()
m2 = rsession.RModel({model!r}, check={check!r})
warm_ms = (time.perf_counter() - t0) * 1e3
print(json.dumps({{"load_ms": load_ms, "second_load_ms": warm_ms, "check": m.description["check"]["passed"][0]}}))
"""


def one(check: bool) -> dict:
    code = CHILD.format(root=str(ROOT), model=str(MODEL), check=check)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "TZ": "UTC"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    runs: dict[bool, list[dict]] = {True: [], False: []}
    for i in range(args.runs):
        for check in (True, False) if i % 2 == 0 else (False, True):
            runs[check].append(one(check))
        print(f"run {i + 1}/{args.runs}", file=sys.stderr, flush=True)
    med = {c: statistics.median(r["load_ms"] for r in runs[c]) for c in runs}
    med2 = {c: statistics.median(r["second_load_ms"] for r in runs[c]) for c in runs}
    print(json.dumps({
        "runs_each": args.runs,
        "first_load_ms_with_check": round(med[True], 2),
        "first_load_ms_without_check": round(med[False], 2),
        "check_adds_to_cold_start_ms": round(med[True] - med[False], 2),
        "second_load_ms_with_check": round(med2[True], 2),
        "second_load_ms_without_check": round(med2[False], 2),
        "check_passed": all(r["check"] for r in runs[True]),
        "loadavg": os.getloadavg(),
    }, indent=2))


if __name__ == "__main__":
    main()
