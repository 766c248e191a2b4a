"""The command line prints one line and exits with 2 on any of the package's errors (issue 9)."""
from __future__ import annotations

import pandas as pd
import pytest

import mixedanova as ma
from mixedanova.cli import main


@pytest.fixture()
def csv(tmp_path):
    def write(frame: pd.DataFrame, name: str = "data.csv") -> str:
        path = tmp_path / name
        frame.to_csv(path, index=False)
        return str(path)
    return write


def _sleep():
    return ma.load_dataset("sleepstudy")


@pytest.mark.parametrize("argv, culprit", [
    (["fit", "Reaction ~ Dayz + (1|Subject)", "--dataset", "sleepstudy"], "'Dayz'"),
    (["fit", "Reaction ~ Days + (1|Subject", "--dataset", "sleepstudy"], "never closed"),
    (["fit", "Reaction ~ Days", "--dataset", "sleepstudy"], "no random-effects term"),
    (["fit", "Reaction ~ Days + (1|Subject)", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["fit", "Reaction ~ Days + (1|Subject)", "--dataset", "sleepstudy", "--ems",
      "restricted"], "ems='restricted' applies to method='ANOVA' only"),
    (["fit", "Reaction ~ Days + (Days|Subject)", "--dataset", "sleepstudy", "--method",
      "ANOVA"], "(Days|Subject)"),
    (["fit", "Reaction ~ Days + (1|Subject)", "--data", "/nonexistent/file.csv"],
     "cannot read --data '/nonexistent/file.csv'"),
])
def test_cli_errors_are_one_line_and_exit_2(capsys, argv, culprit):
    assert main(argv) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mixedanova: error: ")
    assert culprit in lines[0]


def test_cli_data_errors(capsys, csv, tmp_path):
    s = _sleep()
    bad = s.assign(Reaction=s["Reaction"].astype(str).where(s.index != 3, "oops"))
    assert main(["fit", "Reaction ~ Days + (1|Subject)", "--data", csv(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "response 'Reaction' is not numeric" in err[0]
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main(["fit", "Reaction ~ Days + (1|Subject)", "--data", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read --data" in err[0]


def test_cli_formula_error_names_the_position(capsys):
    assert main(["fit", "Reaction ~ Days + 1|Subject", "--dataset", "sleepstudy"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("mixedanova: error: random-effects term must be in parentheses, e.g. "
                   "(1 | g) (in 'Reaction ~ Days + 1|Subject' at character 19)")
