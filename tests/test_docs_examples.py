"""Code blocks of the user guide run as written, each on its own in a fresh
interpreter (the blocks moved out of the README in issue 22 keep being run).

Only pages whose blocks are complete programs are listed; a block that names
data it does not load (the MMRM page's ``fev``) is an illustration, not a
program.  The emmeans tour has its own test with its printed output
(tests/test_docs_tour.py).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_readme import code_blocks

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "user_guide"
PAGES = ["fitting.md", "residual.md", "glmm.md", "batch.md"]

BLOCKS = [(page, line, code) for page in PAGES
          for line, code in code_blocks((GUIDE / page).read_text(encoding="utf-8"))]


def test_the_pages_have_programs():
    assert {page for page, _, _ in BLOCKS} == set(PAGES)


@pytest.mark.parametrize("page,line,code", BLOCKS,
                         ids=[f"{p}:{n}" for p, n, _ in BLOCKS])
def test_guide_block_runs_on_its_own(page, line, code, tmp_path):
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                        os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{page} block at line {line}:\n{out.stderr[-3000:]}"
