"""The page explains any model (Debian's chromium through Playwright, real server and R).

For the admission glm, an lm with a factor and a bundled randomForest on
iris: the form opens with the model's example row, one click gives an answer
and a what-if chart, and the lm's band is R's own
predict(..., interval = "confidence"), computed in a separate Rscript.
The docs page renders the OpenAPI document with Swagger UI.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from localserver import LocalServer
from test_openapi import lm_model, rf_model  # noqa: F401  (fixtures)
from test_web import ARTIFACTS, CHROMIUM, browser, page  # noqa: F401  (fixtures)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (make system)")
ROOT = Path(__file__).resolve().parent.parent


def open_and_click(page: Any, srv: LocalServer) -> dict[str, Any]:
    """Open the page, check every field holds the example row, click once; the example row."""
    page.goto(srv.base + "/")
    page.wait_for_selector("#submit:not([disabled])")
    meta = srv.api("GET", "/metadata")[1]
    for name, value in meta["example"].items():
        assert value is not None, name
        shown = page.input_value(f'[id="field-{name}"]')
        assert (float(shown) if isinstance(value, float) else shown) == value, (name, shown, value)
    page.click("#submit")
    page.wait_for_selector("#chart svg polyline.series")
    return meta


def test_admission_opens_with_its_example_row(server: LocalServer, page: Any) -> None:
    meta = open_and_click(page, server)
    assert meta["example"]["rank"] in ("1", "2", "3", "4")
    assert page.locator("#chart polyline.series").count() == 4
    assert page.console_errors == []


def r_confidence(model: Path, xs: list[float], hp: float, cyl: str) -> tuple[list[float], list[float]]:
    """lwr and upr of predict(fit, nd, interval = "confidence") for wt = xs, from Rscript."""
    script = (f"fit <- readRDS('{model}'); nd <- data.frame(wt = c({','.join(repr(x) for x in xs)}),"
              f" hp = {hp!r}, cyl = '{cyl}'); p <- predict(fit, newdata = nd, interval = 'confidence');"
              " cat(sprintf('%.17g', c(p[, 'lwr'], p[, 'upr'])), sep = '\\n')")
    out = [float(v) for v in subprocess.run(["Rscript", "-e", script], capture_output=True, text=True,
                                            check=True).stdout.split()]
    return out[: len(xs)], out[len(xs):]


def test_lm_band_is_r_confidence_interval(lm_model: Path, page: Any, tmp_path: Path) -> None:  # noqa: F811
    srv = LocalServer(lm_model, tmp_path, "--workers", "1", "--quiet")
    try:
        meta = open_and_click(page, srv)
        # One line and one band per level of factor(cyl), wt swept over its observed range.
        assert page.eval_on_selector_all("#chart polyline.series", "ls => ls.map(l => l.dataset.series)") == \
            ["4", "6", "8"]
        bands = page.eval_on_selector_all(
            "#chart polygon.band", "ps => ps.map(p => [p.dataset.series, p.dataset.x, p.dataset.lower, p.dataset.upper])")
        assert [b[0] for b in bands] == ["4", "6", "8"]
        lo, hi = meta["predictors"][0]["range"]
        for level, xs, lower, upper in bands:
            xs, lower, upper = json.loads(xs), json.loads(lower), json.loads(upper)
            assert xs[0] == lo and xs[-1] == hi and meta["example"]["wt"] in xs
            want_lower, want_upper = r_confidence(lm_model, xs, meta["example"]["hp"], level)
            assert lower == pytest.approx(want_lower, rel=1e-12, abs=1e-12)
            assert upper == pytest.approx(want_upper, rel=1e-12, abs=1e-12)
        # Another predictor to vary: a new chart over hp.
        page.select_option("#sweep", "hp")
        page.wait_for_function("document.querySelector('#chart-title').textContent.endsWith('by hp')")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web-lm-band.png"), full_page=True)
        assert page.console_errors == []
    finally:
        srv.stop()


def test_multiclass_opens_with_the_bundle_example_and_shows_bars(rf_model: Path, page: Any, tmp_path: Path) -> None:  # noqa: F811
    srv = LocalServer(rf_model, tmp_path, "--workers", "1", "--quiet")
    try:
        open_and_click(page, srv)
        assert page.locator("#class-bars rect.bar").count() == 3
        assert page.eval_on_selector_all("#chart polyline.series", "ls => ls.map(l => l.dataset.series)") == \
            ["setosa", "versicolor", "virginica"]
        assert page.locator("#chart polygon.band").count() == 0  # a forest gives no interval
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web-multiclass.png"), full_page=True)
        assert page.console_errors == []
    finally:
        srv.stop()


def test_docs_page_renders_the_document(server: LocalServer, page: Any) -> None:
    if not (ROOT / "web" / "docs" / "vendor" / "swagger-ui-bundle.js").exists():
        pytest.fail("Swagger UI is not installed: run make docs-ui (part of make setup)")
    page.goto(server.base + "/docs")
    page.wait_for_selector(".opblock-summary-path")
    paths = page.eval_on_selector_all(".opblock-summary-path", "es => es.map(e => e.textContent.trim())")
    assert {"/predict", "/ping", "/metadata", "/openapi.json"} <= {p.replace("\u200b", "") for p in paths}
    version = server.api("GET", "/metadata")[1]["model"]["version"]
    assert version in page.text_content(".info")
    # The main page links to it.
    page.goto(server.base + "/")
    assert page.get_attribute("footer a[href='docs/']", "href") == "docs/"
