"""Served probabilities equal R's own predict(fit, type = "response")."""

from __future__ import annotations

import csv
import random
import subprocess
from pathlib import Path

R_PREDICT = """
args <- commandArgs(trailingOnly = TRUE)
fit <- readRDS(args[[1]])
d <- read.csv(args[[2]], colClasses = c("numeric", "numeric", "character"))
d$rank <- factor(d$rank, levels = fit$xlevels$rank)
p <- predict(fit, newdata = d, type = "response")
writeLines(sprintf("%.17g", p), args[[3]])
"""


def r_predict(model: Path, rows: list[dict], tmp: Path) -> list[float]:
    data, out, script = tmp / "rows.csv", tmp / "p.txt", tmp / "predict.R"
    with data.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["gre", "gpa", "rank"])
        writer.writeheader()
        writer.writerows(rows)
    script.write_text(R_PREDICT)
    subprocess.run(["Rscript", str(script), str(model), str(data), str(out)], check=True)
    return [float(x) for x in out.read_text().split()]


def random_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"gre": rng.uniform(200, 800), "gpa": round(rng.uniform(2.0, 4.0), 3), "rank": rng.choice("1234")}
        for _ in range(n)
    ]


def test_batch_equals_r_predict_on_many_rows(make_app, model_path, tmp_path, context):
    # GIVEN 5,000 random applicants, WHEN scored as one batch through the handler
    rows = random_rows(5000, seed=7)
    served = make_app().handle({"instances": rows}, context)["predictions"]
    # THEN every probability equals R's predict() in a separate R process
    expected = r_predict(model_path, rows, tmp_path)
    assert len(served) == len(expected) == 5000
    worst = max(abs(s["probability"] - e) for s, e in zip(served, expected))
    assert worst <= 1e-12, worst
    assert all(s["result"] == (e > 0.5) for s, e in zip(served, expected))


def test_single_rows_equal_the_batch(make_app, context):
    app = make_app()
    rows = random_rows(200, seed=11)
    batch = app.handle({"instances": rows}, context)["predictions"]
    singles = [app.handle(dict(row), context) for row in rows]
    assert [s["probability"] for s in singles] == [b["probability"] for b in batch]


def test_threshold_sets_result(make_app, context):
    row = {"gre": 800, "gpa": 4, "rank": 4}
    low = make_app(threshold=0.2).handle(row, context)
    high = make_app(threshold=0.9).handle(row, context)
    assert low["probability"] == high["probability"]
    assert low["result"] is True and high["result"] is False
