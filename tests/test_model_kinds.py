"""Any fitted R model is served: lm/glm of every family, forests, caret, recipes bundles.

tests/fixtures/fit_models.R fits one model per kind on data sets R and the
packages ship, and writes new rows as JSON. The served numbers are compared
with the model's own predict() run in a separate Rscript process.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIT_MODELS = ROOT / "tests" / "fixtures" / "fit_models.R"

# Deterministic predictions: the service must match R to this tolerance.
TOL = 1e-12

# name -> kind
CASES = {
    "glm_binomial": "binary",
    "glm_poisson": "regression",
    "glm_gamma": "regression",
    "glm_gaussian": "regression",
    "glm_readcsv": "binary",
    "glm_nb": "regression",
    "gam_binomial": "binary",
    "bam_poisson": "regression",
    "lm": "regression",
    "rpart_anova": "regression",
    "rpart_class": "multiclass",
    "rpart_binary": "binary",
    "multinom": "multiclass",
    "multinom_binary": "binary",
    "polr": "multiclass",
    "lda": "multiclass",
    "qda": "multiclass",
    "loess": "regression",
    "nls": "regression",
    "ppr_declared": "regression",
    "rf_multiclass": "multiclass",
    "rf_binary": "binary",
    "rf_regression": "regression",
    "rf_ordered_bundle": "regression",
    "ranger_probability": "multiclass",
    "ranger_classification": "label",
    "ranger_regression": "regression",
    "ranger_bundle": "regression",
    "caret_multiclass": "multiclass",
    "caret_regression": "regression",
    "recipe_lm": "regression",
    "recipe_rf": "multiclass",
}

# R's own predict for each model class, with its natural type, in its own
# process, written here without serve.R. Writes one line per row: the class
# probabilities (or the value; nothing for a class-only model), a tab, R's
# predicted class.
R_PREDICT = r"""
args <- commandArgs(trailingOnly = TRUE)
fit <- readRDS(args[[1]])
# Only the packages this model needs: caret alone takes seconds to load.
need <- c(ranger = "ranger", randomForest = "randomForest", train = "caret", rlambda_bundle = "recipes",
          rpart = "rpart", multinom = "nnet", polr = "MASS", lda = "MASS", qda = "MASS", negbin = "MASS",
          gam = "mgcv")
for (cl in intersect(c(class(fit), class(fit$model)), names(need))) loadNamespace(need[[cl]])
nd <- readRDS(args[[2]])
if (inherits(fit, "rlambda_bundle")) {
  if (!is.null(fit$recipe)) nd <- recipes::bake(fit$recipe, new_data = nd)
  fit <- fit$model
}
n <- nrow(nd)
cls <- rep("", n)
one <- function(x) matrix(as.double(x), nrow = n)
if (inherits(fit, "train")) {
  if (fit$modelType == "Classification") {
    v <- as.matrix(predict(fit, newdata = nd, type = "prob"))[, fit$levels]
    cls <- as.character(predict(fit, newdata = nd, type = "raw"))
  } else v <- one(predict(fit, newdata = nd, type = "raw"))
} else if (inherits(fit, "ranger")) {
  p <- predict(fit, data = nd)$predictions
  if (fit$treetype == "Probability estimation") {
    v <- p[, fit$forest$levels]
  } else if (fit$treetype == "Classification") {
    v <- matrix(numeric(0), nrow = n, ncol = 0)  # ranger's predict gives the class only
    cls <- as.character(p)
  } else v <- one(p)
} else if (inherits(fit, "randomForest")) {
  if (fit$type == "classification") {
    v <- predict(fit, newdata = nd, type = "prob")
    cls <- as.character(predict(fit, newdata = nd, type = "response"))
  } else v <- one(predict(fit, newdata = nd))
} else if (inherits(fit, "rpart")) {
  if (fit$method == "class") {
    v <- predict(fit, nd, type = "prob")
    cls <- as.character(predict(fit, nd, type = "class"))
  } else v <- one(predict(fit, nd, type = "vector"))
} else if (inherits(fit, c("multinom", "polr"))) {
  v <- predict(fit, nd, type = "probs")
  if (!is.matrix(v)) v <- one(v)  # two classes: P(second class) alone
  cls <- as.character(predict(fit, nd, type = "class"))
} else if (inherits(fit, c("lda", "qda"))) {
  p <- predict(fit, nd)
  v <- p$posterior
  cls <- as.character(p$class)
} else if (inherits(fit, c("loess", "nls", "ppr"))) {
  v <- one(predict(fit, nd))
} else if (inherits(fit, c("lm", "glm"))) {
  v <- one(predict(fit, newdata = nd, type = "response"))
} else stop("no reference for class ", class(fit)[[1]])
fmt <- function(x) ifelse(is.na(x), "nan", sprintf("%.17g", x))
lines <- vapply(seq_len(n), function(i) paste0(paste(fmt(v[i, ]), collapse = " "), "\t", cls[[i]]), "")
writeLines(lines, args[[3]])
"""


@pytest.fixture(scope="session")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of fitted models, written once per test session."""
    out = tmp_path_factory.mktemp("fitted")
    env = {**os.environ, "TZ": "UTC"}  # spares R a timedatectl call in containers
    subprocess.run(["Rscript", str(FIT_MODELS), str(out)], check=True, env=env, capture_output=True)
    return out


@pytest.fixture(scope="session")
def apps(fitted: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One App per model (models load once; each App keeps its own)."""
    from rlambda.app import App
    from rlambda.settings import Settings

    cache = tmp_path_factory.mktemp("cache")

    class Apps(dict):
        def __missing__(self, name: str) -> Any:
            app = App(Settings(model_uri=str(fitted / f"{name}.rds"), cache_dir=str(cache)))
            self[name] = app
            return app

    return Apps()


def rows_of(fitted: Path, name: str) -> list[dict[str, Any]]:
    return json.loads((fitted / f"{name}.rows.json").read_text())


def r_predict(fitted: Path, name: str, tmp: Path) -> list[tuple[list[float], str]]:
    script, out = tmp / "predict.R", tmp / f"{name}.out"
    script.write_text(R_PREDICT)
    env = {**os.environ, "TZ": "UTC"}
    subprocess.run(
        ["Rscript", str(script), str(fitted / f"{name}.rds"), str(fitted / f"{name}.newdata.rds"), str(out)],
        check=True,
        env=env,
        capture_output=True,
    )
    result = []
    for line in out.read_text().splitlines():
        numbers, _, label = line.partition("\t")
        result.append(([float(x) for x in numbers.split()], label))
    return result


def error_of(app: Any, payload: Any, context: Any) -> dict[str, Any]:
    from rlambda.errors import HTTPError

    with pytest.raises(HTTPError) as caught:
        app.handle(payload, context)
    return json.loads(str(caught.value))


# -- served numbers equal R's own predict ------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_served_equals_r_predict(name, fitted, apps, tmp_path, context):
    # GIVEN 400 new rows for a model of this kind
    rows = rows_of(fitted, name)
    kind = CASES[name]
    # WHEN they are scored in one batch through the handler
    served = apps[name].handle({"instances": rows}, context)["predictions"]
    # THEN every number equals R's predict() in a separate R process
    expected = r_predict(fitted, name, tmp_path)
    assert len(served) == len(expected) == len(rows) == 400
    meta = apps[name].model().describe()
    assert meta["kind"] == kind
    worst = 0.0
    if kind == "regression":
        for s, (e, _) in zip(served, expected):
            assert set(s) == {"prediction"}
            if math.isnan(e[0]):  # loess outside the data's range: R says NA
                assert s["prediction"] is None
                continue
            worst = max(worst, abs(s["prediction"] - e[0]))
    elif kind == "label":
        for s, (e, label) in zip(served, expected):
            assert set(s) == {"class"} and e == []
            assert s["class"] == label
    elif kind == "binary":
        for s, (e, label) in zip(served, expected):
            assert set(s) == {"result", "probability"}
            p = e[-1]  # glm: P(y = 1); a forest: P(second class)
            worst = max(worst, abs(s["probability"] - p))
            assert s["result"] == (p > 0.5)
            if label and p != 0.5:  # R breaks a tie at random
                assert s["result"] == (label == meta["classes"][1])
    else:
        classes = meta["classes"]
        compared = 0
        for s, (e, label) in zip(served, expected):
            assert set(s) == {"class", "probabilities"}
            assert list(s["probabilities"]) == classes
            worst = max(worst, max(abs(s["probabilities"][c] - x) for c, x in zip(classes, e)))
            if sorted(e)[-1] != sorted(e)[-2]:  # a tie: R picks at random, the service the first
                assert s["class"] == classes[e.index(max(e))]
                if label:  # R's own class, where its predict gives one
                    assert s["class"] == label
                compared += 1
        assert compared > 300
    assert worst <= TOL, worst
    # AND a single row gives the same answer as in the batch
    single = apps[name].handle(dict(rows[3]), context)
    assert {k: v for k, v in single.items() if k != "model"} == served[3]


# -- /metadata says what the model takes and gives ------------------------------------


def test_metadata_of_a_multiclass_forest(apps, context):
    meta = apps["rf_multiclass"].model().describe()
    assert meta["kind"] == "multiclass"
    assert meta["outputs"] == ["class", "probabilities"]
    assert meta["classes"] == ["setosa", "versicolor", "virginica"]
    assert meta["threshold"] is None
    assert meta["packages"] == ["randomForest"]
    assert [p["name"] for p in meta["predictors"]] == ["Sepal.Length", "Sepal.Width", "Petal.Length", "Petal.Width"]


def test_metadata_of_a_glm_with_every_predictor_type(apps):
    meta = apps["glm_binomial"].model().describe()
    assert meta["kind"] == "binary" and meta["outputs"] == ["result", "probability"]
    assert meta["classes"] == ["0", "1"] and meta["positive_class"] == "1"
    assert meta["family"] == "binomial" and meta["link"] == "logit"
    ranges = {p["name"]: p.pop("range") for p in meta["predictors"] if "range" in p}
    assert set(ranges) == {"age", "parity_i", "spontaneous", "induced"}
    # The example row and ranges come from the data the glm keeps (fit$data), as R summarises it.
    script = ("inf <- transform(infert, parity_i = as.integer(parity), young = age < 30, edu_c = as.character(education));"
              " cat(names(which.max(table(inf$edu_c))), median(inf$age), round(median(inf$parity_i)),"
              " median(inf$spontaneous), median(inf$induced), mean(inf$young) > 0.5, range(inf$age), sep = '\\n')")
    r = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True, check=True).stdout.split("\n")
    assert meta["example"] == {"edu_c": r[0], "age": float(r[1]), "parity_i": int(float(r[2])),
                               "spontaneous": float(r[3]), "induced": float(r[4]), "young": r[5] == "TRUE"}
    assert ranges["age"] == [float(r[6]), float(r[7])]
    assert meta["predictors"] == [
        {"name": "edu_c", "type": "character", "levels": ["0-5yrs", "12+ yrs", "6-11yrs"]},
        {"name": "age", "type": "numeric"},
        {"name": "parity_i", "type": "integer"},
        {"name": "spontaneous", "type": "numeric"},
        {"name": "induced", "type": "numeric"},
        {"name": "young", "type": "logical"},
    ]


def test_metadata_of_bundles_and_caret(apps):
    meta = apps["recipe_lm"].model().describe()
    assert meta["preprocessing"] == "recipe: step_log, step_dummy, step_normalize"
    assert "recipes" in meta["packages"]
    assert {"name": "gear_o", "type": "factor", "levels": ["3", "4", "5"]} in meta["predictors"]
    caret = apps["caret_multiclass"].model().describe()
    assert caret["class"] == "train" and caret["preprocessing"] == "caret preProcess: center, scale"
    assert set(caret["packages"]) == {"caret", "randomForest"}
    lm = apps["lm"].model().describe()
    # factor(cyl) in the formula: cyl is sent as one of the levels the model saw
    assert {"name": "cyl", "type": "factor", "levels": ["4", "6", "8"]} in apps["glm_gaussian"].model().describe()["predictors"]
    assert lm["kind"] == "regression" and "classes" not in lm and lm["outputs"] == ["prediction"]


# -- validation names the field and what to send ---------------------------------------


GOOD_INFERT = {"edu_c": "6-11yrs", "age": 31, "parity_i": 2, "spontaneous": 1, "induced": 0, "young": False}
GOOD_LM = {"wt": 3.1, "hp": 120, "disp": 200, "gear_o": "4", "carb_c": "few", "vs_l": True, "cyl_i": 6}


@pytest.mark.parametrize(
    "model,change,field,words",
    [
        ("glm_binomial", {"parity_i": 2.5}, "parity_i", "must be a whole number, got 2.5"),
        ("glm_binomial", {"parity_i": "two"}, "parity_i", "a whole number"),
        ("glm_binomial", {"parity_i": 2**31}, "parity_i", "too large for an R integer"),
        ("glm_binomial", {"young": "maybe"}, "young", "must be true or false, got 'maybe'"),
        ("glm_binomial", {"edu_c": "PhD"}, "edu_c", "must be one of 0-5yrs, 12+ yrs, 6-11yrs, got 'PhD'"),
        ("glm_binomial", {"edu_c": 12}, "edu_c", "one of 0-5yrs, 12+ yrs, 6-11yrs"),
        ("glm_binomial", {"age": None}, "age", "is required"),
        ("lm", {"gear_o": "6"}, "gear_o", "must be one of 3, 4, 5, got '6'"),
        ("lm", {"carb_c": "some"}, "carb_c", "must be one of few, many"),
        ("glm_poisson", {"tension": "X"}, "tension", "must be one of L, M, H, got 'X'"),
        ("glm_gaussian", {"cyl": 5}, "cyl", "must be one of 4, 6, 8, got 5"),
        ("ranger_bundle", {"wool": "C"}, "wool", "must be one of A, B"),
        ("rf_binary", {"carb_f": "lots"}, "carb_f", "must be one of few, many"),
        ("rf_multiclass", {"Petal.Width": "wide"}, "Petal.Width", "a finite number"),
    ],
)
def test_bad_field_is_named(model, change, field, words, apps, fitted, context):
    # GIVEN a valid row of this model with one field spoiled
    row = dict(GOOD_INFERT if model == "glm_binomial" else GOOD_LM if model == "lm" else rows_of(fitted, model)[0])
    row.update(change)
    if change[field] is None:
        del row[field]
    # WHEN it is scored THEN a 400 names the field and says what to send
    err = error_of(apps[model], row, context)
    assert err["httpStatus"] == 400
    assert [e["field"] for e in err["errors"]] == [field]
    assert words in err["errors"][0]["problem"], err["errors"][0]["problem"]


def test_integer_text_and_whole_floats_are_accepted(apps, context):
    app = apps["glm_binomial"]
    a = app.handle(dict(GOOD_INFERT), context)
    b = app.handle({**GOOD_INFERT, "parity_i": "2", "young": "false", "age": "31"}, context)
    c = app.handle({**GOOD_INFERT, "parity_i": 2.0}, context)
    assert a["probability"] == b["probability"] == c["probability"]
    d = app.handle({**GOOD_INFERT, "parity_i": 3}, context)
    assert d["probability"] != a["probability"]


def _r_predict_one(tmp_path: Path, rds: Path, newdata: str, predict_args: str) -> float:
    """R's own predict for one row, in a separate Rscript process (never serve.R's code)."""
    script = tmp_path / "one.R"
    script.write_text(
        "fit <- readRDS(commandArgs(TRUE)[[1]])\n"
        f"nd <- {newdata}\n"
        f"cat(sprintf('%.17g', predict(fit, nd{predict_args})))\n"
    )
    out = subprocess.run(["Rscript", str(script), str(rds)], capture_output=True, text=True,
                         check=True, env={**os.environ, "TZ": "UTC"})
    return float(out.stdout)


def test_integer_stored_numeric_column_takes_a_fraction(apps, fitted, tmp_path, context):
    """dataClasses decide: cyl_i is stored as integer but the lm calls it numeric."""
    app = apps["lm"]
    assert {"name": "cyl_i", "type": "numeric"} in app.model().prototype.describe()
    served = app.handle({**GOOD_LM, "cyl_i": 6.5}, context)["prediction"]
    expected = _r_predict_one(tmp_path, fitted / "lm.rds",
                              "data.frame(wt = 3.1, hp = 120, disp = 200, gear_o = factor('4', levels = c('3', '4', '5'),"
                              " ordered = TRUE), carb_c = 'few', vs_l = TRUE, cyl_i = 6.5)", "")
    assert abs(served - expected) <= TOL


def test_glm_on_read_csv_data_takes_a_fractional_gre(apps, fitted, tmp_path, context):
    """The issue's case: read.csv makes gre integer; the glm's dataClasses say numeric."""
    app = apps["glm_readcsv"]
    assert {"name": "gre", "type": "numeric"} in app.model().prototype.describe()
    served = app.handle({"gre": 650.5, "gpa": 3.1, "rank": 2}, context)["probability"]
    expected = _r_predict_one(tmp_path, fitted / "glm_readcsv.rds",
                              "data.frame(gre = 650.5, gpa = 3.1, rank = factor('2', levels = c('1', '2', '3', '4')))",
                              ", type = 'response'")
    assert abs(served - expected) <= TOL


def test_free_text_predictor():
    """A character column without known levels takes any string, but only a string."""
    from rlambda.errors import BadRequest
    from rlambda.prototype import Predictor, Prototype

    proto = Prototype((Predictor("note", "character"),))
    assert proto.columns([{"note": "anything at all"}])["note"].values == ["anything at all"]
    with pytest.raises(BadRequest) as caught:
        proto.columns([{"note": 5}, {}], "instances")
    assert [(p.field, p.problem) for p in caught.value.problems] == [
        ("instances[0].note", "must be a string, got 5"),
        ("instances[1].note", "is required: send a string"),
    ]


# -- models that cannot be served are refused at load, saying why ----------------------


@pytest.mark.parametrize(
    "name,status,words",
    [
        ("bad_gbm", 500, "the model needs R package 'gbm', which is not installed in this R library"),
        ("bad_bundle_package", 500, "the model needs R package 'notInstalledPkg', which is not installed"),
        ("bad_namespace", 500, "the model needs R package 'splinez', which is not installed"),
        ("bad_nopredict", 503, "a 'mystery_model' model (class mystery_model) is not one rlambda knows"),
        ("bad_ranger_factors", 500, "does not record the levels of its factor predictor(s) wool, tension"),
        ("bad_rf_ordered", 500, "does not record the levels of factor predictor(s) gear_o"),
        ("bad_caret_noprobs", 500, "trainControl(classProbs = TRUE)"),
        ("bad_list", 503, "a 'list' model (class list) is not one rlambda knows"),
        ("bad_unstable_bundle", 503, "the served answer differs from what the bundle's declared predict gives"),
    ],
)
def test_unservable_model_is_refused_at_load(name, status, words, apps, context):
    # GIVEN a model file this R cannot serve WHEN the first request arrives
    err = error_of(apps[name], {"x": 1}, context)
    # THEN the answer names the reason (a missing package by name), not a traceback:
    # 503 for a model outside the table, 500 for a broken one
    assert err["httpStatus"] == status
    assert err["errorType"] == ("ModelUnavailable" if status == 503 else "InternalError")
    assert words in err["message"], err["message"]
    assert "Traceback" not in err["message"] and "[rlambda]" not in err["message"]
    assert "[unsupported]" not in err["message"]


def test_a_class_outside_the_table_is_refused_with_the_way_to_serve_it(apps, context, caplog):
    # GIVEN a stats::ppr model (it has a predict method, but is not in the table)
    err = error_of(apps["bad_unsupported"], {"wt": 3, "hp": 120}, context)
    # THEN a 503 names its class, lists what is supported and shows the bundle way
    assert err["httpStatus"] == 503 and err["errorType"] == "ModelUnavailable"
    message = err["message"]
    assert "a 'ppr.form' model (class ppr.form/ppr) is not one rlambda knows" in message
    for supported in ("lm (stats)", "glm (stats)", "negbin (MASS)", "gam (mgcv)", "rpart (rpart)",
                      "multinom (nnet)", "polr (MASS)", "lda (MASS)", "qda (MASS)", "loess (stats)",
                      "nls (stats)", "randomForest (randomForest)", "ranger (ranger)", "train (caret)",
                      "rlambda_bundle"):
        assert supported in message, supported
    assert "rlambda_bundle(fit, data, predict = function(model, newdata)" in message
    assert 'kind = "regression"' in message
    # AND the log line says the same
    assert any("ppr.form" in str(getattr(r, "reason", "")) for r in caplog.records)


def test_metadata_reports_the_check_against_r(apps):
    for name in ("glm_binomial", "polr", "ranger_classification", "ppr_declared"):
        check = apps[name].model().describe()["check"]
        assert check["passed"] is True and check["rows"] >= 8, (name, check)
        assert check["tolerance"] == 1e-9
        assert check["max_rel_diff"] is None or check["max_rel_diff"] <= 1e-9
    polr = apps["polr"].model().describe()
    assert polr["check"]["reference"] == 'predict(fit, newdata, type = "probs") and type = "class"'
    assert polr["check"]["classes_compared"] >= 1
    assert polr["served_by"] == "polr"
    assert apps["glm_nb"].model().describe()["served_by"] == "negbin"


# -- packaging: the packages a model needs, from the model object ----------------------


def run_packages(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["Rscript", str(ROOT / "models" / "packages.R"), str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC"},
    )


def test_packages_cli_lists_recursive_non_base_dependencies(fitted):
    ranger = run_packages(fitted / "ranger_bundle.rds")
    assert ranger.returncode == 0, ranger.stderr
    names = ranger.stdout.split()
    # ranger Imports Rcpp and Matrix (which Depends on lattice); base R is left out
    assert {"ranger", "Rcpp", "Matrix", "lattice"} <= set(names)
    assert not {"stats", "methods", "utils", "base"} & set(names)
    caret = run_packages(fitted / "caret_multiclass.rds").stdout.split()
    assert {"caret", "randomForest", "recipes", "ggplot2"} <= set(caret)
    assert run_packages(fitted / "glm_binomial.rds").stdout.split() == []


def test_packages_cli_fails_naming_a_missing_package(fitted, tmp_path):
    gone = run_packages(fitted / "bad_gbm.rds")
    assert gone.returncode == 1
    assert "the model needs R package 'gbm'" in gone.stderr
    missing = run_packages(tmp_path / "nope.rds")
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_packages_from_python_match_the_model(fitted):
    from rlambda import rsession

    assert rsession.packages(fitted / "recipe_rf.rds") == ["randomForest", "recipes"]
    assert "Rcpp" in rsession.packages(fitted / "ranger_regression.rds", recursive=True)


def test_probabilities_are_finite_or_null(apps, fitted, context):
    served = apps["ranger_probability"].handle({"instances": rows_of(fitted, "ranger_probability")}, context)
    for row in served["predictions"]:
        total = sum(row["probabilities"].values())
        assert math.isclose(total, 1.0, abs_tol=1e-9)


# -- a CSV through batch scoring gives the same numbers (issue 15) ---------------------


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


@pytest.mark.parametrize("name", sorted(CASES))
def test_batch_file_equals_r_predict(name, fitted, apps, tmp_path):
    import csv
    import io

    from rlambda.batch import score_file
    from rlambda.blobs import DirBlobs

    # GIVEN the same 400 rows as a CSV file
    rows = rows_of(fitted, name)
    header = list(rows[0])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_csv_cell(r.get(h)) for h in header] for r in rows)
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "rows.csv").write_text(buf.getvalue())
    # WHEN the file is batch-scored
    result = score_file(apps[name].model(), DirBlobs(tmp_path), "inputs/rows.csv", tmp_dir=str(tmp_path / "t"))
    assert (result.scored, result.failed) == (400, 0)
    out = list(csv.DictReader(io.StringIO((tmp_path / "outputs" / "rows.csv").read_text())))
    # THEN every number is R's predict() in a separate process, to the 15 digits written
    expected = r_predict(fitted, name, tmp_path)
    meta = apps[name].model().describe()

    def close(got: str, want: float) -> bool:
        return float(got) == pytest.approx(want, rel=1e-14, abs=1e-300)

    for row, (e, label) in zip(out, expected):
        if meta["kind"] == "regression":
            if math.isnan(e[0]):  # loess outside the data's range: R says NA, written empty
                assert row["prediction"] == ""
                continue
            assert close(row["prediction"], e[0])
        elif meta["kind"] == "label":
            assert row["class"] == label
        elif meta["kind"] == "binary":
            assert close(row["probability"], e[-1]) and row["result"] == str(e[-1] > 0.5)
        else:
            assert all(close(row[f"probabilities_{c}"], x) for c, x in zip(meta["classes"], e))
            if sorted(e)[-1] != sorted(e)[-2]:
                assert row["class"] == meta["classes"][e.index(max(e))]


# Cells the API refuses or reads in its own way, per predictor type (no
# quote or comma: the chunk is read by fread directly, without the csv module).
_ODD_CELLS = {
    "numeric": ["3.5", " 2 ", "8e2", "1e", "0x10", "Inf", "NaN", "", "abc", "1e400", "-0", "+.5", "1_000",
                "1e100", "1e-300", "=1+1", "1" * 250, "0" * 250 + "7"],
    "integer": ["2", " 3 ", "007", "1.0", "1e2", "", "x", "1234567890", "-4", "+5", "2.5", "@2"],
    "logical": ["true", "FALSE", " yes ", "no", "1", "0", "T", "f", "maybe", "", "TRUE ", "-1"],
}


@pytest.mark.parametrize("name", ["glm_binomial", "lm"])
@pytest.mark.parametrize("rows", [300, 6000])
def test_batch_messages_equal_the_apis_for_every_type(name, rows, apps, tmp_path):
    # 6,000 rows: a chunk whose columns hold few distinct values, which
    # batch.R parses once per value; 300 rows: parsed cell by cell
    from rlambda.batch import score_file
    from rlambda.blobs import DirBlobs
    from rlambda.errors import BadRequest

    model = apps[name].model()
    desc = model.r.description
    cells = []
    for col, kind, levels in zip(desc["names"], desc["types"], desc["levels"]):
        if levels:
            cells.append([str(v) for v in levels] + [f" {levels[0]} ", "", "zzz", str(levels[-1]).upper() + "x", "-x"])
        else:
            cells.append(_ODD_CELLS[kind])
    # GIVEN rows mixing the cells of every column (each column its own stride)
    table = [[c[(k * (3 + 2 * j) + k // 7) % len(c)] for j, c in enumerate(cells)] for k in range(rows)]
    expected = []
    for row in table:
        try:
            model.prototype.columns([dict(zip(desc["names"], row))])
            expected.append(None)
        except BadRequest as exc:
            expected.append("; ".join(f"{p.field} {p.problem}" for p in exc.problems))
    (tmp_path / "inputs").mkdir()
    body = ",".join(desc["names"]) + "\n" + "".join(",".join(r) + "\n" for r in table)
    (tmp_path / "inputs" / "odd.csv").write_text(body)
    # WHEN the file is batch-scored
    result = score_file(model, DirBlobs(tmp_path), "inputs/odd.csv", tmp_dir=str(tmp_path / "t"))
    # THEN every row the API refuses is refused with the API's message, and only those
    errors = {}
    if (tmp_path / "outputs" / "odd.errors.csv").exists():
        import csv
        import io

        got = list(csv.reader(io.StringIO((tmp_path / "outputs" / "odd.errors.csv").read_text(), newline="")))
        errors = {int(e[0]): e[1] for e in got[1:]}
    assert [errors.get(i + 1) for i in range(rows)] == expected
    assert result.failed == sum(e is not None for e in expected) and 0 < result.scored < rows
