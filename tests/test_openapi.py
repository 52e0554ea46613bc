"""GET /openapi.json, held to the handler by an independent fuzzer (schemathesis) on the real server.

Three kinds of model: the admission glm (binary), an lm with a factor
(regression, with intervals) and a randomForest on iris bundled with its data
(multiclass). schemathesis generates valid and invalid requests from the
document and checks every answer against it: no 5xx, only documented status
codes and content types, answers that match their schemas, every invalid
request refused (4xx) and every valid one accepted (2xx).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from localserver import LocalServer

CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_schema_conformance", "negative_data_rejection", "positive_data_acceptance",
])
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
SEED = 20261126
MAX_EXAMPLES = 60


def fit(out: Path, script: str) -> Path:
    """Fit and save a model in a separate Rscript process."""
    subprocess.run(["Rscript", "-e", script], check=True, timeout=180, cwd=ROOT, capture_output=True)
    assert out.exists()
    return out


@pytest.fixture(scope="session")
def lm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """lm(mpg ~ wt + hp + factor(cyl), mtcars): numeric predictors and a factor made in the formula."""
    out = tmp_path_factory.mktemp("lm") / "mtcars-lm.rds"
    return fit(out, f"saveRDS(lm(mpg ~ wt + hp + factor(cyl), data = mtcars), '{out}')")


@pytest.fixture(scope="session")
def rf_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """randomForest on iris, bundled with its data (models/bundle.R), so it has an example row."""
    if subprocess.run(["Rscript", "-e", "library(randomForest)"], capture_output=True).returncode != 0:
        pytest.skip("r-cran-randomforest is not installed (make system)")
    out = tmp_path_factory.mktemp("rf") / "iris-rf.rds"
    return fit(out, "source('models/bundle.R'); suppressMessages(library(randomForest)); set.seed(1);"
                    f" rlambda_save(rlambda_bundle(randomForest(Species ~ ., data = iris, ntree = 50), iris), '{out}')")


def models(request: pytest.FixtureRequest, name: str) -> Path:
    return request.getfixturevalue({"admission": "model_path", "lm": "lm_model", "rf": "rf_model"}[name])


@pytest.mark.parametrize("name", ["admission", "lm", "rf"])
def test_schemathesis_finds_no_disagreement(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    # GIVEN the real local server (make serve's process) for this model
    srv = LocalServer(models(request, name), tmp_path, "--workers", "1", "--quiet")
    try:
        # WHEN schemathesis tests every operation of its document, seeded and bounded
        run = subprocess.run(
            [str(SCHEMATHESIS), "run", f"{srv.base}/openapi.json", "--checks", CHECKS,
             "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--generation-database", "none",
             "--no-color", "--request-timeout", "60"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
        )
        # THEN it finds no failure (its report is shown when it does)
        print(run.stdout[-6000:])
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        assert " generated, " in run.stdout and " passed" in run.stdout
    finally:
        srv.stop()


def get(srv: LocalServer, path: str) -> Any:
    status, body = srv.api("GET", path)
    assert status == 200, body
    return body


def test_document_describes_the_model(lm_model: Path, tmp_path: Path) -> None:
    srv = LocalServer(lm_model, tmp_path, "--workers", "1", "--quiet")
    try:
        doc = get(srv, "/openapi.json")
        meta = get(srv, "/metadata")
    finally:
        srv.stop()
    assert doc["openapi"] == "3.1.0" and doc["info"]["version"] == meta["model"]["version"]
    row = doc["components"]["schemas"]["Row"]
    assert row["required"] == ["wt", "hp", "cyl"] and row["additionalProperties"] is True
    cyl = row["properties"]["cyl"]["anyOf"]
    assert cyl[1] == {"type": "integer", "enum": [4, 6, 8]}
    assert doc["components"]["schemas"]["Batch"]["properties"]["instances"]["maxItems"] == meta["max_rows"]
    assert [p["name"] for p in doc["paths"]["/predict"]["get"]["parameters"]] == ["wt", "hp", "cyl", "interval"]
    assert set(doc["paths"]["/predict"]["post"]["responses"]) == {"200", "400", "413", "415", "500", "503"}
    # The example row: medians from the model frame, the most frequent level of factor(cyl).
    expected = subprocess.run(
        ["Rscript", "-e", "cat(median(mtcars$wt), median(mtcars$hp), names(which.max(table(mtcars$cyl))),"
                          " min(mtcars$wt), max(mtcars$wt))"],
        capture_output=True, text=True, check=True).stdout.split()
    assert meta["example"] == {"wt": float(expected[0]), "hp": float(expected[1]), "cyl": expected[2]}
    assert meta["predictors"][0]["range"] == [float(expected[3]), float(expected[4])]
    assert doc["components"]["schemas"]["SingleRow"]["example"] == meta["example"]


def test_document_follows_the_served_model_and_is_built_once(tmp_path: Path, model_path: Path) -> None:
    """A new version with other levels, promoted in the served folder: the next document describes it."""
    import time

    from rlambda.app import App
    from rlambda.events import Request
    from rlambda.registry import publish_file, registry_for
    from rlambda.settings import Settings

    other = fit(tmp_path / "other.rds",
                "set.seed(2); d <- data.frame(x = rnorm(60), g = factor(sample(c('low','mid','high'), 60, TRUE)));"
                " d$y <- rbinom(60, 1, plogis(d$x)); saveRDS(glm(y ~ x + g, binomial, d),"
                f" '{tmp_path / 'other.rds'}')")
    # GIVEN a versioned folder serving the admission model
    folder = str(tmp_path / "models") + "/"
    (tmp_path / "models").mkdir()
    first_version = publish_file(registry_for(folder), str(model_path)).version
    app = App(Settings(model_uri=folder, cache_dir=str(tmp_path / "cache"), refresh_s=0.05))
    doc1 = app.route(Request("GET", "/openapi.json", "test")).body
    assert app.route(Request("GET", "/openapi.json", "test")).body is doc1  # built once, then kept
    assert doc1["info"]["version"] == first_version
    # WHEN another model, with other predictors and levels, is promoted
    second_version = publish_file(registry_for(folder), str(other)).version
    time.sleep(0.06)
    app.route(Request("GET", "/ping", "test"))  # the refresh happens between requests
    doc2 = app.route(Request("GET", "/openapi.json", "test")).body
    # THEN the document describes the new version, its predictors and levels
    assert doc2["info"]["version"] == second_version != first_version
    rank = doc1["components"]["schemas"]["Row"]["properties"]["rank"]["anyOf"][0]["pattern"]
    g = doc2["components"]["schemas"]["Row"]["properties"]["g"]["pattern"]
    assert "high" in g and "low" in g and "high" not in rank
    assert set(doc2["components"]["schemas"]["Row"]["properties"]) == {"x", "g"}


def r_confidence(model: Path, rows: list[dict[str, Any]], level: float, factors: tuple[str, ...] = ()) -> list[list[float]]:
    """R's predict(..., interval = "confidence") in a separate Rscript: [fit, lwr, upr] per row."""
    cols = ", ".join(
        f"{k} = {'c(' + ','.join(repr(str(r[k])) for r in rows) + ')' if k in factors else 'c(' + ','.join(str(r[k]) for r in rows) + ')'}"
        for k in rows[0]
    )
    script = (f"fit <- readRDS('{model}'); nd <- data.frame({cols});"
              f" p <- predict(fit, newdata = nd, interval = 'confidence', level = {level});"
              " cat(sprintf('%.17g', t(p)), sep = '\\n')")
    out = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True, check=True).stdout.split()
    values = [float(v) for v in out]
    return [values[i:i + 3] for i in range(0, len(values), 3)]


def test_interval_equals_r_confidence_interval(lm_model: Path, tmp_path: Path) -> None:
    rows = [{"wt": 2.2, "hp": 110, "cyl": 4}, {"wt": 3.5, "hp": 180, "cyl": 8}, {"wt": 3.0, "hp": 120, "cyl": 6}]
    srv = LocalServer(lm_model, tmp_path, "--workers", "1", "--quiet")
    try:
        status, body = srv.api("POST", "/predict", {"instances": rows, "interval": 0.9})
        status1, one = srv.api("GET", "/predict?wt=2.2&hp=110&cyl=4&interval=0.9")
        status2, refused = srv.api("POST", "/predict", {**rows[0], "interval": 1.5})
    finally:
        srv.stop()
    assert status == 200 and status1 == 200 and status2 == 400
    assert refused["errors"] == [{"field": "interval", "problem": "must be a number between 0 and 1, such as 0.95"}]
    want = r_confidence(lm_model, rows, 0.9, factors=())
    for got, (fitted, lwr, upr) in zip(body["predictions"], want):
        assert got["prediction"] == pytest.approx(fitted, rel=1e-12)
        assert got["interval"] == {"level": 0.9, "lower": pytest.approx(lwr, rel=1e-12),
                                   "upper": pytest.approx(upr, rel=1e-12)}
    assert one["interval"] == body["predictions"][0]["interval"]


def test_glm_interval_is_r_link_scale_interval_through_the_link_inverse(model_path: Path, tmp_path: Path) -> None:
    rows = [{"gre": 800, "gpa": 4.0, "rank": "1"}, {"gre": 300, "gpa": 2.5, "rank": "4"}]
    srv = LocalServer(model_path, tmp_path, "--workers", "1", "--quiet")
    try:
        status, body = srv.api("POST", "/predict", {"instances": rows, "interval": 0.95})
    finally:
        srv.stop()
    assert status == 200
    script = (f"fit <- readRDS('{model_path}'); nd <- data.frame(gre = c(800, 300), gpa = c(4, 2.5),"
              " rank = factor(c('1', '4'), levels = levels(fit$model$rank)));"
              " p <- predict(fit, newdata = nd, type = 'link', se.fit = TRUE); z <- qnorm(0.975);"
              " cat(sprintf('%.17g', c(plogis(p$fit), plogis(p$fit - z * p$se.fit), plogis(p$fit + z * p$se.fit))),"
              " sep = '\\n')")
    want = [float(v) for v in subprocess.run(["Rscript", "-e", script], capture_output=True, text=True,
                                              check=True).stdout.split()]
    for i, got in enumerate(body["predictions"]):
        assert got["probability"] == pytest.approx(want[i], rel=1e-12)
        assert got["interval"]["lower"] == pytest.approx(want[2 + i], rel=1e-12)
        assert got["interval"]["upper"] == pytest.approx(want[4 + i], rel=1e-12)
        assert got["interval"]["lower"] < got["probability"] < got["interval"]["upper"]


def test_interval_is_refused_for_a_model_without_one(rf_model: Path, tmp_path: Path) -> None:
    srv = LocalServer(rf_model, tmp_path, "--workers", "1", "--quiet")
    try:
        status, body = srv.api("POST", "/predict", {"Sepal.Length": 5, "Sepal.Width": 3, "Petal.Length": 1.5,
                                                    "Petal.Width": 0.2, "interval": 0.95})
        meta = get(srv, "/metadata")
    finally:
        srv.stop()
    assert status == 400 and body["errors"][0]["field"] == "interval"
    assert meta["interval"] is False
    # The bundle's example row: the median of each iris measurement, from R.
    medians = subprocess.run(["Rscript", "-e", "cat(sprintf('%.17g', sapply(iris[1:4], median)))"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert meta["example"] == dict(zip(["Sepal.Length", "Sepal.Width", "Petal.Length", "Petal.Width"],
                                       map(float, medians)))


TEXTS = [("800", True), (" 800\t", True), ("\v800\f\r\n", True), ("\u0663\u0660\u0660", False), ("\uff18\uff10\uff10", False),
         ("800\u00a0", False), ("\u2003800", False), ("800\u3000", False)]


@pytest.mark.parametrize("text, accepted", TEXTS)
def test_numbers_as_text_are_ascii_in_the_validator_and_the_document(make_app: Any, text: str, accepted: bool) -> None:
    """A number sent as text has ASCII digits and ASCII white space around it, as the document says in any
    regex dialect (ECMA-262's \\d is ASCII, Python's is not; their \\s differ), and as batch.R reads a cell."""
    import re

    from rlambda.errors import BadRequest
    from rlambda.events import Request

    app = make_app()
    doc = app.route(Request("GET", "/openapi.json", "test")).body
    # GIVEN the document's pattern for gre as text
    (pattern,) = [s["pattern"] for s in doc["components"]["schemas"]["Row"]["properties"]["gre"]["anyOf"]
                  if "pattern" in s]
    # THEN it names its classes (no \d or \s, whose meaning depends on the dialect)
    assert "\\d" not in pattern and "\\s" not in pattern
    # AND it and the validator agree on the text
    assert bool(re.search(pattern, text)) is accepted
    try:
        app.model().prototype.columns([{"gre": text, "gpa": 3.5, "rank": 1}])
        refused = False
    except BadRequest:
        refused = True
    assert refused is not accepted


NODE_CHECK = r"""
const {patterns, texts} = JSON.parse(require("fs").readFileSync(0, "utf8"));
const out = patterns.map(p => {
  let re;
  try { re = new RegExp(p, "u"); } catch (e) { return {error: String(e)}; }
  return {matches: texts.map(t => re.test(t))};
});
process.stdout.write(JSON.stringify(out));
"""


def _patterns(doc: Any) -> list[str]:
    """Every "pattern" in a JSON document."""
    if isinstance(doc, dict):
        return [v for k, v in doc.items() if k == "pattern" and isinstance(v, str)] + [
            p for k, v in doc.items() if k != "pattern" for p in _patterns(v)]
    if isinstance(doc, list):
        return [p for v in doc for p in _patterns(v)]
    return []


def test_every_pattern_means_the_same_in_ecma_262_as_in_python(make_app: Any, tmp_path: Path) -> None:
    """JSON Schema patterns are ECMA-262 regular expressions: each one in the document compiles in
    unicode mode (as ajv uses them) and accepts exactly what Python's re accepts, for levels with
    spaces, hyphens and pattern syntax in them, numbers with Unicode digits and white space."""
    import re
    import shutil

    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("no node here (Debian's nodejs comes with npm, which make installs)")
    levels = ["low-income", "New York", "a#b", "x&y", "~z", "dot.com", "a/b", "(p)", "[x]", "a|b", "q?*+"]
    # GIVEN a model whose factor has such levels
    model = fit(tmp_path / "levels.rds",
                f"set.seed(3); lv <- c({', '.join(json.dumps(v) for v in levels)});"
                " d <- data.frame(x = rnorm(120), g = factor(rep(lv, length.out = 120), levels = lv));"
                " d$y <- rbinom(120, 1, plogis(d$x)); "
                f"saveRDS(glm(y ~ x + g, binomial, d), '{tmp_path / 'levels.rds'}')")
    from rlambda.events import Request

    app = make_app(model_uri=str(model))
    doc = app.route(Request("GET", "/openapi.json", "test")).body
    patterns = sorted(set(_patterns(doc)))
    assert len(patterns) >= 2
    texts = levels + [f" {v}\t" for v in levels] + ["lowXincome", "dotXcom", "a", "b", "New  York", "(p", "p",
                                                    "800", " 8e2 ", "\u0663", "\uff18", "800\u00a0", "\u2003800",
                                                    "\v1\f", "1\u3000", "+.5", "1e400", "1_0"]
    # WHEN node compiles each with the unicode flag and tries every text
    run = subprocess.run([node, "-e", NODE_CHECK], input=json.dumps({"patterns": patterns, "texts": texts}),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(run.stdout)
    # THEN every pattern compiles there, and matches what it matches in Python
    for pattern, result in zip(patterns, results):
        assert "error" not in result, (pattern, result)
        python = [re.search(pattern, t) is not None for t in texts]
        assert result["matches"] == python, pattern
