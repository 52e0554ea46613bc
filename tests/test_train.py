"""models/simulate.R and models/train.R: the stand-in data and the fit, and bad CSVs."""

from __future__ import annotations

import subprocess

import pytest

from conftest import ROOT

TRAIN = ROOT / "models" / "train.R"
SIMULATE = ROOT / "models" / "simulate.R"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["Rscript", *args], capture_output=True, text=True, timeout=120)


def test_simulated_data_matches_the_published_summary(tmp_path):
    out = tmp_path / "sim.csv"
    assert run(str(SIMULATE), "--out", str(out)).returncode == 0
    lines = out.read_text().splitlines()
    assert lines[0] == '"admit","gre","gpa","rank"' and len(lines) == 401
    rows = [list(map(float, line.split(","))) for line in lines[1:]]
    admit, gre, gpa, rank = zip(*rows)
    assert [rank.count(r) for r in (1, 2, 3, 4)] == [61, 151, 121, 67]
    assert (min(gre), max(gre), min(gpa), max(gpa)) == (220, 800, 2.26, 4.0)
    assert abs(sum(gre) / 400 - 588) < 5 and abs(sum(gpa) / 400 - 3.39) < 0.02
    assert abs(sum(admit) / 400 - 0.32) < 0.02


def test_train_on_a_csv_writes_a_glm(tmp_path):
    data, model = tmp_path / "sim.csv", tmp_path / "m.rds"
    run(str(SIMULATE), "--out", str(data))
    result = run(str(TRAIN), "--data", str(data), "--out", str(model))
    assert result.returncode == 0, result.stderr
    check = run("-e", f'f <- readRDS("{model}"); cat(class(f)[1], f$family$family, names(f$xlevels))')
    assert check.stdout.split() == ["glm", "binomial", "rank"]


@pytest.mark.parametrize(
    "content,words",
    [
        ("admit,gre,gpa\n1,300,3\n", "lacks column(s) rank"),
        ("admit,gre,gpa,rank\n1,abc,3,1\n0,300,3,2\n", "column gre row 1 is 'abc', not a number"),
        ("", "no lines available"),
        ("admit,gre,gpa,rank\n", "no rows"),
        ("admit,gre,gpa,rank\n2,300,3,1\n0,300,3,2\n", "admit must be 0 or 1"),
    ],
)
def test_bad_csv_stops_with_one_line_and_no_output(tmp_path, content, words):
    data, model = tmp_path / "bad.csv", tmp_path / "m.rds"
    data.write_text(content)
    result = run(str(TRAIN), "--data", str(data), "--out", str(model))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == [data]


def test_unreadable_path(tmp_path):
    result = run(str(TRAIN), "--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "m.rds"))
    assert result.returncode != 0 and "no such file" in result.stderr
    assert not (tmp_path / "m.rds").exists()
