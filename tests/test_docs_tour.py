"""The lme4 / emmeans tour of the user guide (docs/user_guide/emmeans.md, the
python block under "## Tour") runs as written, on its own."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "user_guide" / "emmeans.md"


def _tour_block() -> str:
    text = PAGE.read_text(encoding="utf-8")
    section = text[text.index("## Tour"):]
    end = section.find("\n## ", 1)
    section = section if end < 0 else section[:end]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_docs_tour_runs():
    out = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(_tour_block(), "emmeans.md (tour)", "exec"), namespace)
    printed = out.getvalue()
    assert "N0.0 - N0.2" in printed          # emmeans: pairs(emm) printed its contrasts
    assert "P value adjustment: tukey method" in printed   # ... and its note
    pred = namespace["pred"]
    assert list(pred.columns) == ["mean", "se_fit", "df", "ci_low", "ci_high", "pi_low",
                                  "pi_high"]
    assert namespace["sims"].shape == (616, 100)   # lme4: simulate(m, nsim = 100)
