"""The README's "Quick tour" block runs as written (issue 13), headless, in a scratch folder."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _tour_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quick tour", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2  # the lmm / ANOVA tour, then a GLMM
    return blocks


def _tour_block() -> str:
    return _tour_blocks()[0]


def test_readme_tour_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(_tour_block(), "README.md (Tour)", "exec"), {"__name__": "__tour__"})
    out = capsys.readouterr().out
    assert "REML criterion at convergence: 1743.6283" in out   # lme4: REMLcrit(m)
    assert "s2_e + 4 s2_blend" in out
    png = tmp_path / "sleepstudy_ranef.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "7.128" in out and "28.533" in out   # the pigment components


def test_readme_glmm_block_prints_the_glmer_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(_tour_blocks()[1], "README.md (GLMM)", "exec"), {"__name__": "__tour__"})
    out = capsys.readouterr().out
    # lme4: summary(glmer(cbind(inc, size - inc) ~ 1 + (1|herd), family = binomial))
    assert "Family: binomial  ( logit )" in out and "Signif. codes" in out
