"""Code blocks of the user guide run as written, each on its own in a fresh
interpreter (the blocks moved out of the README in issue 22 keep being run).

Only pages whose blocks are complete programs are listed; a block that names
data it does not load (the MMRM page's ``fev``) is an illustration, not a
program.  The emmeans tour has its own test with its printed output
(tests/test_docs_tour.py).
"""
from __future__ import annotations

import pytest

from _codeblocks import ROOT, code_blocks, run_block

GUIDE = ROOT / "docs" / "user_guide"
PAGES = ["fitting.md", "residual.md", "glmm.md", "batch.md"]

BLOCKS = [(page, line, code) for page in PAGES
          for line, code in code_blocks((GUIDE / page).read_text(encoding="utf-8"))]


def test_the_pages_have_programs():
    assert {page for page, _, _ in BLOCKS} == set(PAGES)


@pytest.mark.parametrize("page,line,code", BLOCKS,
                         ids=[f"{p}:{n}" for p, n, _ in BLOCKS])
def test_guide_block_runs_on_its_own(page, line, code, tmp_path):
    out = run_block(code, tmp_path)
    assert out.returncode == 0, f"{page} block at line {line}:\n{out.stderr[-3000:]}"
