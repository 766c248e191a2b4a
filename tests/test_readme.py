"""Every code block of README.md runs on its own (issue 22).

Each fenced block opened with ```` ```python ```` is written to a file and run by
a fresh interpreter (``python block.py``), one block at a time, in its own
scratch folder with a headless matplotlib: a block that needs a name from an
earlier block fails.  The ```` ```bash ```` blocks are the set-up commands
(``.ci/run`` runs the test one; tests/test_cli.py covers ``mixedanova fit``);
they are checked to be the documented ones, not run.
"""
from __future__ import annotations

import pytest

from _codeblocks import ROOT, code_blocks, run_block

README = ROOT / "README.md"


def test_block_extraction():
    text = "intro\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = x + 1\n```\n"
    assert code_blocks(text) == [(3, "x = 1\n"), (9, "y = x + 1\n")]
    assert code_blocks(text, "bash") == [(6, "ls\n")]


def test_a_block_that_needs_an_earlier_one_fails(tmp_path):
    # the runner really is one interpreter per block: y = x + 1 alone raises NameError
    out = run_block("y = x + 1\n", tmp_path)
    assert out.returncode != 0 and "NameError" in out.stderr


_BLOCKS = code_blocks(README.read_text(encoding="utf-8"))


def test_readme_has_python_blocks():
    assert len(_BLOCKS) >= 2, "README.md should show at least two runnable blocks"


@pytest.mark.parametrize("line,code", _BLOCKS, ids=[f"line{n}" for n, _ in _BLOCKS])
def test_readme_block_runs_on_its_own(line, code, tmp_path):
    out = run_block(code, tmp_path)
    assert out.returncode == 0, (f"README.md block starting at line {line} failed in a "
                                 f"fresh interpreter:\n{out.stderr[-3000:]}")


def test_readme_setup_commands_are_the_documented_ones():
    bash = [c.strip() for _, c in code_blocks(README.read_text(encoding="utf-8"), "bash")]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install ".[test]" && python -m pytest -q' in bash
    assert 'pip install --quiet ".[test]" && python -m pytest -q' in ci  # the same command
    assert any(c.startswith("pip install . && mixedanova fit") for c in bash)
    docs = [c for c in bash if "sphinx-build" in c]
    assert docs == ['pip install ".[docs]" && sphinx-build -W --keep-going -b html docs '
                    'docs/_build/html']
