"""What the self-description costs: model load, the OpenAPI build, one-row scoring.

For three models (the admission glm, lm(mpg ~ wt + hp + factor(cyl), mtcars),
a randomForest on iris bundled with its data), in one run on one machine:

- load: reading the .rds into R and deriving everything (rl_load), with this
  tree's code (which also computes the example row, ranges and the interval
  closure, explain.R) and with the baseline tree's code (--baseline, default
  /work/main or the tree given), each in a fresh process, same file;
- build: openapi.build() on the loaded model (done once per model, on the
  first GET /openapi.json, never on load or on a prediction);
- predict: one row through Model.predict, p50 of many calls, both trees:
  the scoring path must not have slowed down.

The two trees run alternately, --rounds times each (fresh processes), and
each figure is the median over the rounds, so both sides see the same
machine state.

    .venv/bin/python bench/bench_openapi.py [--baseline /work/main] [--loads 15] [--calls 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchutil import progress

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
from rlambda.model import Model
from rlambda.store import ModelFile
from rlambda import rsession
path, loads, calls, row = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
import hashlib
sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
fields = ModelFile.__dataclass_fields__
source = ModelFile(**{k: v for k, v in dict(uri=path, path=path, sha256=sha, etag=None, version=sha[:12],
                                              pointer_etag=None).items() if k in fields})
rsession.start()
Model.load(source)  # warm-up: packages loaded once per process, as in a warm Lambda
t = []
for _ in range(loads):
    t0 = time.perf_counter(); model = Model.load(source); t.append(time.perf_counter() - t0)
out = {"load_ms": round(statistics.median(t) * 1e3, 3)}
try:
    from rlambda import openapi
    from rlambda.settings import Settings
    b = []
    for _ in range(loads):
        t0 = time.perf_counter(); doc = openapi.build(model, Settings()); b.append(time.perf_counter() - t0)
    out["build_ms"] = round(statistics.median(b) * 1e3, 3)
    out["document_bytes"] = len(json.dumps(doc))
except ImportError:
    pass
for _ in range(200):
    model.predict([row])
p = []
for _ in range(calls):
    t0 = time.perf_counter(); model.predict([row]); p.append(time.perf_counter() - t0)
p.sort()
out["predict_p50_us"] = round(p[len(p) // 2] * 1e6, 1)
print(json.dumps(out))
"""


def fit(out: Path, script: str) -> Path:
    subprocess.run(["Rscript", "-e", script], check=True, cwd=ROOT, capture_output=True, timeout=300)
    return out


def child(tree: Path, model: Path, loads: int, calls: int, row: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    run = subprocess.run([sys.executable, "-c", CHILD, str(tree), str(model), str(loads), str(calls), json.dumps(row)],
                         env=env, capture_output=True, text=True, cwd=tree)
    if run.returncode != 0:
        raise SystemExit(run.stderr[-3000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", type=Path, default=Path("/work/main"))
    ap.add_argument("--loads", type=int, default=15)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-openapi-"))
    progress("fitting the lm and the randomForest bundle (Rscript)")
    models = {
        "admission_glm": (ROOT / "models" / "admission.rds", {"gre": 700, "gpa": 3.6, "rank": "2"}),
        "mtcars_lm": (fit(tmp / "lm.rds", f"saveRDS(lm(mpg ~ wt + hp + factor(cyl), mtcars), '{tmp / 'lm.rds'}')"),
                      {"wt": 3, "hp": 120, "cyl": 6}),
        "iris_rf_bundle": (fit(tmp / "rf.rds", "source('models/bundle.R'); suppressMessages(library(randomForest));"
                               " set.seed(1); rlambda_save(rlambda_bundle(randomForest(Species ~ ., iris,"
                               f" ntree = 50), iris), '{tmp / 'rf.rds'}')"),
                           {"Sepal.Length": 5.8, "Sepal.Width": 3, "Petal.Length": 4.35, "Petal.Width": 1.3}),
    }
    result: dict = {"loadavg_before": os.getloadavg(), "baseline_tree": str(args.baseline),
                    "loads": args.loads, "calls": args.calls, "rounds": args.rounds, "models": {}}
    for name, (path, row) in models.items():
        runs: dict[str, list[dict]] = {"this_tree": [], "baseline": []}
        for r in range(args.rounds):
            progress(f"{name}: round {r + 1}/{args.rounds}")
            runs["this_tree"].append(child(ROOT, path, args.loads, args.calls, row))
            runs["baseline"].append(child(args.baseline, path, args.loads, args.calls, row))
        mine = {k: statistics.median(x[k] for x in runs["this_tree"]) for k in runs["this_tree"][0]}
        base = {k: statistics.median(x[k] for x in runs["baseline"]) for k in runs["baseline"][0]}
        result["models"][name] = {
            "this_tree": mine,
            "baseline": base,
            "load_ratio": round(mine["load_ms"] / base["load_ms"], 3),
            "load_plus_build_ratio": round((mine["load_ms"] + mine.get("build_ms", 0)) / base["load_ms"], 3),
            "predict_p50_ratio": round(mine["predict_p50_us"] / base["predict_p50_us"], 3),
        }
    result["loadavg_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
