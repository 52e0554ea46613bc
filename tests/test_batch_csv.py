"""Batch scoring of hostile CSVs, and its numbers against R's own predict (run by Rscript)."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from rlambda.app import App
from rlambda.batch import score_file
from rlambda.blobs import DirBlobs
from rlambda.errors import BadRequest
from rlambda.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def app(model_path, tmp_path) -> App:
    return App(Settings(model_uri=str(model_path), cache_dir=str(tmp_path / "cache")))


@pytest.fixture
def store(tmp_path) -> Path:
    root = tmp_path / "store"
    (root / "inputs").mkdir(parents=True)
    return root


def run(app: App, store: Path, data: bytes, name: str = "x.csv", **kw):
    (store / "inputs" / name).write_bytes(data)
    return score_file(app.model(), DirBlobs(store), f"inputs/{name}", tmp_dir=str(store.parent / "tmp"), **kw)


def rows_of(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8"), newline="")))


def test_probabilities_equal_rs_own_predict(app, store, model_path):
    # GIVEN 3,000 applicants in several chunks
    rng = random.Random(11)
    lines = ["id,gre,gpa,rank"] + [f"a{i},{rng.randrange(200, 801)},{rng.uniform(2, 4):.3f},{rng.randint(1, 4)}"
                                   for i in range(3000)]
    result = run(app, store, ("\n".join(lines) + "\n").encode(), chunk_bytes=20_000)
    assert (result.rows, result.scored, result.failed) == (3000, 3000, 0)
    # WHEN R itself, in another process, predicts the same file
    script = (
        "fit <- readRDS(commandArgs(TRUE)[1]); d <- read.csv(commandArgs(TRUE)[2], colClasses = 'character');"
        "nd <- data.frame(gre = as.numeric(d$gre), gpa = as.numeric(d$gpa), rank = factor(d$rank, levels = fit$xlevels$rank));"
        "cat(sprintf('%.17g', predict(fit, newdata = nd, type = 'response')), sep = '\\n')"
    )
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    done = subprocess.run(["Rscript", "-e", script, str(model_path), str(store / "inputs" / "x.csv")],
                          capture_output=True, text=True, check=True, env=env)
    want = [float(x) for x in done.stdout.split()]
    # THEN every probability is R's, to the 15 significant digits fwrite (like write.csv) writes
    got = rows_of(store / "outputs" / "x.csv")
    assert got[0] == ["id", "gre", "gpa", "rank", "result", "probability", "model_version"]
    assert len(got) - 1 == len(want) == 3000
    for row, p in zip(got[1:], want):
        assert float(row[5]) == pytest.approx(p, rel=1e-14, abs=0)
        assert row[4] == str(p > 0.5)


def test_bom_crlf_quoted_cells_and_blank_lines(app, store):
    body = ('id,gre,gpa,rank\r\n"Smith, J.",800,4,1\r\n"say ""hi""",700,3.5,2\r\n'
            '"two\r\nlines",600,3,3\r\n\r\n  spaced  ,500,2.5,4\r\n')
    result = run(app, store, b"\xef\xbb\xbf" + body.encode())
    assert (result.rows, result.scored, result.failed) == (4, 4, 0)
    got = rows_of(store / "outputs" / "x.csv")
    assert got[0][:4] == ["id", "gre", "gpa", "rank"]  # the BOM is not part of the first name
    assert [r[:4] for r in got[1:]] == [
        ["Smith, J.", "800", "4", "1"], ['say "hi"', "700", "3.5", "2"],
        ["two\r\nlines", "600", "3", "3"], ["  spaced  ", "500", "2.5", "4"]]
    assert not (store / "outputs" / "x.errors.csv").exists()


def test_a_ragged_row_is_named_and_the_rest_scored(app, store):
    result = run(app, store, b"id,gre,gpa,rank\na,800,4,1\nb,800,4\nc,800,4,1,extra\nd,700,3,2\n")
    assert (result.rows, result.scored, result.failed) == (4, 2, 2)
    errors = rows_of(store / "outputs" / "x.errors.csv")
    assert [(e[0], e[1]) for e in errors[1:]] == [("2", "has 3 fields, the header has 4"),
                                                  ("3", "has 5 fields, the header has 4")]


def test_invalid_utf8_is_refused_with_its_offset_and_nothing_stale_survives(app, store):
    out = store / "outputs"
    run(app, store, b"id,gre,gpa,rank\na,800,4,1\nb,abc,4,1\n")
    assert (out / "x.errors.csv").exists()
    data = b"id,gre,gpa,rank\na,800,4,1\nb\xe9,800,4,1\n"
    result = run(app, store, data)
    at = data.index(b"\xe9")
    assert result.refused and f"offset {at}" in result.refused and "line 3" in result.refused
    assert rows_of(out / "x.csv") == [["id", "gre", "gpa", "rank", "result", "probability", "model_version"]]
    errors = rows_of(out / "x.errors.csv")
    assert len(errors) == 2 and errors[1][0] == "0" and "not valid UTF-8" in errors[1][1]


def test_a_declared_encoding_is_decoded(app, store):
    result = run(app, store, "id,gre,gpa,rank\nJosé,800,4,1\n".encode("latin-1"), encoding="latin-1")
    assert result.refused is None and result.scored == 1
    assert rows_of(store / "outputs" / "x.csv")[1][0] == "José"


def test_formula_cells_are_neutralised_in_outputs_and_errors(app, store):
    body = ('id,gre,gpa,rank\n"=HYPERLINK(""http://x"",""y"")",800,4,1\n+cmd,800,4,1\n-2+3,800,4,1\n'
            '@SUM(A1),800,4,1\n"\tx",800,4,1\n-5,800,4,1\nplain,800,4,1\n=bad,=1+1,4,1\n')
    result = run(app, store, body.encode())
    assert (result.scored, result.failed) == (7, 1)
    ids = [r[0] for r in rows_of(store / "outputs" / "x.csv")[1:]]
    assert ids == ["'=HYPERLINK(\"http://x\",\"y\")", "'+cmd", "'-2+3", "'@SUM(A1)", "'\tx", "-5", "plain"]
    (err,) = rows_of(store / "outputs" / "x.errors.csv")[1:]
    assert err[2:4] == ["'=bad", "'=1+1"]
    assert err[1] == "gre must be a finite number, got '=1+1'"


def test_a_clean_rerun_deletes_the_old_errors_file(app, store):
    run(app, store, b"id,gre,gpa,rank\na,800,4,1\nb,abc,4,1\n")
    assert (store / "outputs" / "x.errors.csv").exists()
    result = run(app, store, b"id,gre,gpa,rank\na,800,4,1\nb,700,4,1\n")
    assert result.failed == 0 and result.errors_output is None
    assert not (store / "outputs" / "x.errors.csv").exists()
    assert len(rows_of(store / "outputs" / "x.csv")) == 3


CELLS = ["800", " 800 ", "8e2", "1e", "0x10", "Inf", "NaN", "", "abc", "1e400", "-0", "+.5", "1_000",
         "'quoted'", 'say "x"', "a" * 60, "1e100", "1e-300", "8e02", "1" * 250, "0" * 250 + "7",
         # digits and white space outside ASCII (refused), ASCII's own white space (ignored), controls
         "\u0663\u0660\u0660", "\uff18\uff10\uff10", "800\u00a0", "\u2003800", "800\u2003", "\v800\f", "8\t00",
         "800\x7f", "\u200b800"]
RANKS = ["1", " 2 ", "4", "5", "1.0", "", "one", "\uff12", "\u0662", " 2\u00a0", "\v3\f", "3\u2028"]


def test_batch_validation_agrees_with_the_api_message_for_message(app, store):
    model = app.model()
    lines, expected = ["gre,gpa,rank"], []
    for gre in CELLS:
        for rank in RANKS:
            buf = io.StringIO()
            csv.writer(buf, lineterminator="").writerow([gre, "3.5", rank])
            lines.append(buf.getvalue())
            try:
                model.prototype.columns([{"gre": gre, "gpa": "3.5", "rank": rank}])
                expected.append(None)
            except BadRequest as exc:
                expected.append("; ".join(f"{p.field} {p.problem}" for p in exc.problems))
    result = run(app, store, ("\n".join(lines) + "\n").encode("utf-8"))
    errors = {int(e[0]): e[1] for e in rows_of(store / "outputs" / "x.errors.csv")[1:]}
    got = [errors.get(i + 1) for i in range(len(expected))]
    assert got == expected
    assert result.failed == sum(e is not None for e in expected) > 0


def test_values_first_seen_after_the_sampled_cells_are_parsed_like_the_rest(app, store):
    """batch.R parses a column's distinct values once, found from its first 2,048 cells and then
    the cells those miss: values (good and bad) that first appear later get the API's messages and
    the same output as the same rows scored cell by cell in a small file."""
    model = app.model()
    # GIVEN 6,000 rows (one chunk) whose first 2,500 hold two gre and two gpa values, and whose
    # later rows bring new ones, some of them refused
    late_gre = ["700", " 640 ", "8e2", "abc", "1e400", "0x10", ""]
    late_gpa = ["3.95", "+.5", "4.00", "x"]
    table = []
    for k in range(6000):
        if k < 2500:
            table.append((f"a{k}", ("500", "600")[k % 2], ("3.1", "3.5")[k % 2], str(k % 4 + 1)))
        else:
            table.append((f"a{k}", late_gre[k % len(late_gre)], late_gpa[k % len(late_gpa)], str(k % 4 + 1)))
    expected = []
    for _, gre, gpa, rank in table:
        try:
            model.prototype.columns([{"gre": gre, "gpa": gpa, "rank": rank}])
            expected.append(None)
        except BadRequest as exc:
            expected.append("; ".join(f"{p.field} {p.problem}" for p in exc.problems))
    body = "id,gre,gpa,rank\n" + "".join(",".join(r) + "\n" for r in table)
    # WHEN it is scored, and its late rows alone (fewer than 4,096: parsed cell by cell)
    result = run(app, store, body.encode())
    late = "id,gre,gpa,rank\n" + "".join(",".join(r) + "\n" for r in table[2500:])
    run(app, store, late.encode(), name="late.csv")
    # THEN every refusal is the API's, and the late rows are written as the small file writes them
    errors = {int(e[0]): e[1] for e in rows_of(store / "outputs" / "x.errors.csv")[1:]}
    assert [errors.get(i + 1) for i in range(len(table))] == expected
    assert result.failed == sum(e is not None for e in expected) > 0
    big, small = rows_of(store / "outputs" / "x.csv"), rows_of(store / "outputs" / "late.csv")
    assert [r for r in big[1:] if int(r[0][1:]) >= 2500] == small[1:]
    assert len(small) > 1


def test_without_data_table_batch_scoring_refuses_naming_it(model_path, tmp_path):
    # GIVEN an R library without data.table (the site library hidden)
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from rlambda.app import App; from rlambda.batch import score_file, Refused\n"
        "from rlambda.blobs import DirBlobs; from rlambda.settings import Settings\n"
        "import pathlib; root = pathlib.Path(%r); (root / 'inputs').mkdir(parents=True)\n"
        "(root / 'inputs' / 'x.csv').write_text('gre,gpa,rank\\n800,4,1\\n')\n"
        "app = App(Settings(model_uri=%r, cache_dir=str(root / 'c')))\n"
        "try:\n    score_file(app.model(), DirBlobs(root), 'inputs/x.csv', tmp_dir=str(root / 'c'))\n"
        "except Refused as exc:\n    print('REFUSED', exc)\n"
    ) % (str(ROOT), str(tmp_path / "s"), str(model_path))
    env = {**os.environ, "R_LIBS_SITE": str(tmp_path / "none"), "R_LIBS_USER": str(tmp_path / "none")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    # THEN it refuses with a message naming data.table, and writes nothing
    assert "REFUSED batch scoring needs R package 'data.table'" in done.stdout, done.stderr[-2000:]
    assert not (tmp_path / "s" / "outputs").exists()


@pytest.mark.parametrize("version", ["2026-11-26T10:00:00Z", 'v,1 "x"', "v\u00e9"])
def test_model_version_is_written_as_a_csv_cell(app, store, monkeypatch, version):
    # a plain version ends each line as it is; one with a comma or a quote is quoted
    import rlambda.batch

    monkeypatch.setattr(rlambda.batch, "model_version", lambda model: version)
    run(app, store, b"id,gre,gpa,rank\na,800,4,1\nb,700,3,2\n")
    got = rows_of(store / "outputs" / "x.csv")
    assert [r[-1] for r in got] == ["model_version", version, version]
    assert all(len(r) == 7 for r in got)
