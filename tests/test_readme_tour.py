"""The README's tour (the python block under "## Tour") runs as written."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _tour_block() -> str:
    text = README.read_text()
    section = text[text.index("## Tour"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_readme_tour_runs():
    out = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(_tour_block(), "README.md (tour)", "exec"), namespace)
    printed = out.getvalue()
    assert "N0.0 - N0.2" in printed          # the Tukey pairs were printed
    pred = namespace["pred"]
    assert list(pred.columns) == ["mean", "se_fit", "df", "ci_low", "ci_high", "pi_low",
                                  "pi_high"]
    assert namespace["sims"].shape == (616, 100)
