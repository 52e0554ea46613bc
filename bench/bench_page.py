"""The page's first chart: time to the what-if chart in Debian's chromium, three models.

For the admission glm, lm(mpg ~ wt + hp + factor(cyl), mtcars) and a
randomForest on iris bundled with its data, each served by the real local
server (one worker): a fresh page load, then one click on Predict with the
example row the form opens with. Reported per model, median of --runs fresh
loads: navigation start to the chart drawn (load, /metadata, the prediction,
the batch of the chart and drawing), and click to chart. Target: under 1 s.

    .venv/bin/python bench/bench_page.py [--runs 7]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from localserver import LocalServer  # noqa: E402
from benchutil import progress  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
MEASURE = """() => new Promise((resolve) => {
  const clicked = performance.now();
  const done = () => resolve({click_to_chart_ms: performance.now() - clicked, since_navigation_ms: performance.now()});
  const obs = new MutationObserver(() => {
    if (document.querySelector('#chart svg polyline.series')) { obs.disconnect(); done(); }
  });
  obs.observe(document.getElementById('chart'), {childList: true, subtree: true});
  document.getElementById('submit').click();
})"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="bench-page-"))
    progress("fitting the lm and the randomForest bundle (Rscript)")
    subprocess.run(["Rscript", "-e", f"saveRDS(lm(mpg ~ wt + hp + factor(cyl), mtcars), '{tmp / 'lm.rds'}')"],
                   check=True, capture_output=True)
    subprocess.run(["Rscript", "-e", "source('models/bundle.R'); suppressMessages(library(randomForest)); set.seed(1);"
                    f" rlambda_save(rlambda_bundle(randomForest(Species ~ ., iris, ntree = 50), iris), '{tmp / 'rf.rds'}')"],
                   check=True, capture_output=True, cwd=ROOT)
    models = {"admission_glm": ROOT / "models" / "admission.rds", "mtcars_lm": tmp / "lm.rds",
              "iris_rf_bundle": tmp / "rf.rds"}
    out: dict = {"loadavg_before": os.getloadavg(), "runs": args.runs, "target_ms": 1000, "models": {}}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--headless", "--no-sandbox", "--disable-gpu"])
        for name, model in models.items():
            progress(name)
            srv = LocalServer(model, tmp, "--workers", "1", "--quiet")
            try:
                totals, clicks, rows = [], [], 0
                for _ in range(args.runs):
                    context = browser.new_context()
                    page = context.new_page()
                    page.goto(srv.base + "/")
                    page.wait_for_selector("#submit:not([disabled])")
                    m = page.evaluate(MEASURE)
                    clicks.append(m["click_to_chart_ms"])
                    totals.append(m["since_navigation_ms"])
                    rows = page.evaluate("document.querySelector('#chart-caption').textContent")
                    context.close()
                out["models"][name] = {
                    "navigation_to_chart_ms_p50": round(statistics.median(totals), 1),
                    "click_to_chart_ms_p50": round(statistics.median(clicks), 1),
                    "click_to_chart_ms_max": round(max(clicks), 1),
                    "chart": rows,
                }
            finally:
                srv.stop()
        browser.close()
    out["loadavg_after"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
