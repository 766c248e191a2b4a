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


# ------------------------------------------------ restricted formulas (issue 23)
def test_cli_refuses_hostile_formulas_by_default(capsys, tmp_path, monkeypatch):
    from _hostile import make_canary, payloads, transforms
    path, intact = make_canary(tmp_path, monkeypatch)
    codes = [f"I({c})" for c in payloads(path)] + transforms(path)
    assert len(codes) >= 40
    for code in codes:
        assert main(["fit", f"Reaction ~ Days + {code} + (1|Subject)", "--dataset",
                     "sleepstudy"]) == 2, code
        cap = capsys.readouterr()
        assert intact(), code
        lines = cap.err.strip().splitlines()
        assert cap.out == "" and len(lines) == 1 and "restricted formula" in lines[0], code


def test_cli_unrestricted_lifts_the_restriction(capsys):
    argv = ["fit", "Reaction ~ np.round(Days / 2) + (1|Subject)", "--dataset", "sleepstudy"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'np.round' is refused: calls are limited to" in err
    assert main(argv + ["--unrestricted"]) == 0
    out = capsys.readouterr().out
    assert "np.round(Days / 2)" in out
    # a legitimate formula fits the same either way
    legit = ["fit", "Reaction ~ np.log1p(Days) + (Days|Subject)", "--dataset", "sleepstudy"]
    assert main(legit) == 0
    restricted = capsys.readouterr().out
    assert main(legit + ["--unrestricted"]) == 0
    assert capsys.readouterr().out == restricted


def test_cli_help_says_formulas_are_restricted(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--unrestricted" in text and "restricted mode" in text
    assert "nothing in the formula is run as code" in text
