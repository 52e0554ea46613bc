"""The page in a real browser (Debian's chromium through Playwright) against the real server and R."""

from __future__ import annotations

import functools
import http.client
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from localserver import LocalServer

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (make system)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # Debian's chromium, never a downloaded one.
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    pg = context.new_page()
    pg.console_errors = []  # type: ignore[attr-defined]
    pg.on("console", lambda m: m.type == "error" and pg.console_errors.append(m.text))  # type: ignore[attr-defined]
    pg.on("pageerror", lambda e: pg.console_errors.append(str(e)))  # type: ignore[attr-defined]
    yield pg
    context.close()


def open_form(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#submit:not([disabled])")


def fill(page: Any, gre: str, gpa: str, rank: str) -> None:
    page.fill("#field-gre", gre)
    page.fill("#field-gpa", gpa)
    page.select_option("#field-rank", rank)


def test_form_result_and_chart_match_the_api(server: LocalServer, page: Any) -> None:
    batches: list[dict[str, Any]] = []
    page.on("request", lambda r: r.method == "POST" and "instances" in (r.post_data or "")
            and batches.append(json.loads(r.post_data)))
    open_form(page, server.base + "/")
    # The form is built from /metadata: numbers are text inputs, rank a select of its levels.
    assert page.locator("#fields input, #fields select").count() == 3
    assert page.eval_on_selector_all("#field-rank option", "os => os.map(o => o.value)") == ["1", "2", "3", "4"]
    assert page.get_attribute("label[for=field-gre]", "for") == "field-gre"

    fill(page, "640", "3.3", "3")
    page.click("#submit")
    page.wait_for_selector("#chart svg polyline.series")

    status, expected = server.api("POST", "/predict", {"gre": 640, "gpa": 3.3, "rank": "3"})
    assert status == 200
    assert page.text_content("#decision") == ("Admit" if expected["result"] else "Reject")
    assert page.get_attribute("#decision", "data-value") == str(expected["result"]).lower()
    assert float(page.get_attribute("#probability", "data-value")) == expected["probability"]
    assert page.text_content("#probability") == f"{expected['probability'] * 100:.1f}%"

    # Four series, one per rank, from one batch request: GRE over its observed range (61 values and
    # the applicant's own) x 4 ranks at the entered GPA, with the glm's confidence band.
    ranks = page.eval_on_selector_all("#chart polyline.series", "ls => ls.map(l => l.dataset.series)")
    assert ranks == ["1", "2", "3", "4"]
    points = page.eval_on_selector_all("#chart polyline.series", "ls => ls.map(l => l.points.numberOfItems)")
    assert points == [62, 62, 62, 62]
    assert page.locator("#chart polygon.band").count() == 4
    assert len(batches) == 1
    rows = batches[0]["instances"]
    assert len(rows) == 248 and {r["gpa"] for r in rows} == {3.3} and {r["rank"] for r in rows} == {"1", "2", "3", "4"}
    assert batches[0]["interval"] == 0.95
    meta = server.api("GET", "/metadata")[1]
    assert min(r["gre"] for r in rows) == meta["predictors"][0]["range"][0] and 640 in {r["gre"] for r in rows}
    # The applicant is marked at the API's probability.
    marker = page.locator("#chart circle.applicant")
    assert marker.count() == 1
    assert float(marker.get_attribute("data-y")) == expected["probability"]
    assert float(marker.get_attribute("data-x")) == 640
    # The rank-3 curve passes through the applicant's point (same model, same inputs).
    on_curve = page.evaluate("""() => {
        const c = document.querySelector('#chart circle.applicant');
        const line = document.querySelector('#chart polyline.series[data-series="3"]');
        const cx = +c.getAttribute('cx'), cy = +c.getAttribute('cy');
        return Array.from({length: line.points.numberOfItems}, (_, i) => line.points.getItem(i))
            .some(p => Math.abs(p.x - cx) < 0.2 && Math.abs(p.y - cy) < 0.2);
    }""")
    assert on_curve

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-admission.png"), full_page=True)
    assert (ARTIFACTS / "web-admission.png").stat().st_size > 0
    assert page.console_errors == []


def test_api_validation_error_shows_next_to_its_field(server: LocalServer, page: Any) -> None:
    open_form(page, server.base + "/")
    fill(page, "700", "3.6", "2")
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])")

    fill(page, "abc", "3.6", "2")
    page.click("#submit")
    page.wait_for_selector("#error-gre:not([hidden])")
    status, expected = server.api("POST", "/predict", {"gre": "abc", "gpa": 3.6, "rank": "2"})
    assert status == 400
    problem = next(e["problem"] for e in expected["errors"] if e["field"] == "gre")
    assert page.text_content("#error-gre") == f"gre {problem}"
    assert "must be a finite number, got 'abc'" in problem
    assert page.get_attribute("#field-gre", "aria-invalid") == "true"
    assert page.get_attribute("#field-gre", "aria-describedby") == "error-gre"
    assert page.is_hidden("#error-gpa") and page.is_hidden("#result") and page.is_hidden("#chart-panel")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-error.png"), full_page=True)

    # An empty field is the API's "is required", and a fix clears the error.
    page.fill("#field-gre", "")
    page.fill("#field-gpa", "")
    page.click("#submit")
    page.wait_for_selector("#error-gpa:not([hidden])")
    assert "is required" in page.text_content("#error-gpa")
    fill(page, "700", "3.6", "2")
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])")
    assert page.is_hidden("#error-gre") and page.is_hidden("#error-gpa")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-fixed.png"), full_page=True)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def test_page_from_another_origin_uses_config_json_and_api_key(server: LocalServer, page: Any, tmp_path: Path) -> None:
    """As when the page is on S3/CloudFront and the API on API Gateway: config.json names the API."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "web", site)
    (site / "config.json").write_text(json.dumps({"apiBase": server.base + "/", "apiKey": "k-123"}))
    static = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=static.serve_forever, daemon=True).start()
    keys: list[tuple[str, str | None]] = []
    page.on("request", lambda r: r.url.startswith(server.base) and keys.append((r.method, r.headers.get("x-api-key"))))
    try:
        open_form(page, f"http://127.0.0.1:{static.server_address[1]}/index.html")
        assert page.text_content("#api-base") == server.base
        fill(page, "800", "4", "1")
        page.click("#submit")
        page.wait_for_selector("#chart svg polyline.series")
        _, expected = server.api("POST", "/predict", {"gre": 800, "gpa": 4, "rank": "1"})
        assert float(page.get_attribute("#probability", "data-value")) == expected["probability"]
        api_calls = [k for k in keys if k[0] != "OPTIONS"]
        assert api_calls and all(key == "k-123" for _, key in api_calls), keys
        assert page.console_errors == []
    finally:
        static.shutdown()


@pytest.fixture(scope="module")
def regression_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An lm with a numeric, a factor and a logical predictor: not the admission model."""
    out = tmp_path_factory.mktemp("lm") / "lm.rds"
    script = (
        "set.seed(1); n <- 80; d <- data.frame(x = runif(n), g = factor(sample(c('a','b','c'), n, TRUE)),"
        " flag = sample(c(TRUE, FALSE), n, TRUE)); d$y <- 2 * d$x + (d$g == 'b') - 0.5 * d$flag + rnorm(n, sd = 0.1);"
        f" saveRDS(lm(y ~ x + g + flag, data = d), '{out}')"
    )
    subprocess.run(["Rscript", "-e", script], check=True, timeout=120)
    return out


def test_form_is_built_from_metadata_for_another_model(regression_model: Path, page: Any, tmp_path: Path) -> None:
    srv = LocalServer(regression_model, tmp_path)
    try:
        open_form(page, srv.base + "/")
        assert page.get_attribute("#field-x", "type") == "text"
        assert page.eval_on_selector_all("#field-g option", "os => os.map(o => o.value)") == ["a", "b", "c"]
        assert page.get_attribute("#field-flag", "type") == "checkbox"
        assert page.text_content("#title") == "Model scoring"
        page.fill("#field-x", "0.25")
        page.select_option("#field-g", "b")
        page.check("#field-flag")
        page.click("#submit")
        page.wait_for_selector("#prediction-line:not([hidden])")
        status, expected = srv.api("POST", "/predict", {"x": 0.25, "g": "b", "flag": True})
        assert status == 200 and set(expected) == {"prediction", "model"}
        assert float(page.get_attribute("#prediction", "data-value")) == expected["prediction"]
        # A what-if chart of the prediction against x, one line per level of g; no decision.
        page.wait_for_selector("#chart svg polyline.series")
        assert page.eval_on_selector_all("#chart polyline.series", "ls => ls.map(l => l.dataset.series)") == ["a", "b", "c"]
        assert page.is_hidden("#probability-line")
        assert page.is_hidden(".decision-line")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web-regression.png"), full_page=True)
        assert page.console_errors == []
    finally:
        srv.stop()


def test_multiclass_model_shows_class_and_probabilities(page: Any, tmp_path: Path) -> None:
    """A randomForest on iris: numeric inputs named with dots, a class and one probability per class."""
    if subprocess.run(["Rscript", "-e", "library(randomForest)"], capture_output=True).returncode != 0:
        pytest.skip("r-cran-randomforest is not installed (make system)")
    model = tmp_path / "rf.rds"
    subprocess.run(["Rscript", "-e", "suppressMessages(library(randomForest)); set.seed(1);"
                    f" saveRDS(randomForest(Species ~ ., data = iris, ntree = 50), '{model}')"], check=True, timeout=120)
    srv = LocalServer(model, tmp_path)
    try:
        open_form(page, srv.base + "/")
        row = {"Sepal.Length": "6.3", "Sepal.Width": "2.9", "Petal.Length": "5.6", "Petal.Width": "1.8"}
        for name, value in row.items():
            page.fill(f'[id="field-{name}"]', value)
        page.click("#submit")
        page.wait_for_selector("#class-block:not([hidden])")
        status, expected = srv.api("POST", "/predict", {k: float(v) for k, v in row.items()})
        assert status == 200
        assert page.text_content("#predicted-class") == expected["class"]
        shown = page.eval_on_selector_all(
            "#class-probabilities tr", "trs => trs.map(t => [t.dataset.class, +t.querySelector('td').dataset.value])")
        assert dict(shown) == expected["probabilities"]
        assert page.is_hidden("#probability-line") and page.is_hidden("#prediction-line")
        # A bar per class at the API's probabilities, and a chart with a line per class.
        bars = page.eval_on_selector_all("#class-bars rect.bar", "rs => rs.map(r => [r.dataset.class, +r.dataset.value])")
        assert dict(bars) == expected["probabilities"]
        page.wait_for_selector("#chart svg polyline.series")
        assert page.eval_on_selector_all("#chart polyline.series", "ls => ls.map(l => l.dataset.series)") == \
            ["setosa", "versicolor", "virginica"]
        assert page.console_errors == []
    finally:
        srv.stop()


def test_unreachable_api_is_said_on_the_page(page: Any, tmp_path: Path) -> None:
    """config.json naming an API that does not answer: a message, not a blank page."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "web", site)
    import socket

    with socket.socket() as s:  # a port that was free a moment ago and has no listener now
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    (site / "config.json").write_text(json.dumps({"apiBase": f"http://127.0.0.1:{dead}", "apiKey": ""}))
    static = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=static.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://127.0.0.1:{static.server_address[1]}/")
        page.wait_for_selector("#form-error:not([hidden])")
        assert "Cannot reach the API" in page.text_content("#form-error")
        assert page.text_content("#model-info") == "The model's description is unavailable."
        assert page.is_disabled("#submit")
    finally:
        static.shutdown()
