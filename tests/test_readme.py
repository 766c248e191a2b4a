"""Every code block of README.md runs on its own (issue 22).

Each fenced block opened with ```` ```python ```` is written to a file and run by
a fresh interpreter (``python block.py``), one block at a time, in its own
scratch folder with a headless matplotlib: a block that needs a name from an
earlier block fails.  The ```` ```bash ```` blocks are the set-up commands
(``.ci/run`` runs the test one; tests/test_cli.py covers ``mixedanova fit``);
they are checked to be the documented ones, not run.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_FENCE = re.compile(r"^```(\w+)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def code_blocks(text: str, language: str = "python") -> list[tuple[int, str]]:
    """``(line number of the first code line, code)`` of each block in ``language``."""
    return [(text.count("\n", 0, m.start(2)) + 1, m.group(2)) for m in _FENCE.finditer(text)
            if m.group(1) == language]


def test_block_extraction():
    text = "intro\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = x + 1\n```\n"
    assert code_blocks(text) == [(3, "x = 1\n"), (9, "y = x + 1\n")]
    assert code_blocks(text, "bash") == [(6, "ls\n")]


def test_a_block_that_needs_an_earlier_one_fails(tmp_path):
    # the runner really is one interpreter per block: y = x + 1 alone raises NameError
    out = _run("y = x + 1\n", tmp_path)
    assert out.returncode != 0 and "NameError" in out.stderr


def _run(code: str, folder: Path) -> subprocess.CompletedProcess:
    script = folder / "block.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                        os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, str(script)], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)


_BLOCKS = code_blocks(README.read_text(encoding="utf-8"))


def test_readme_has_python_blocks():
    assert len(_BLOCKS) >= 2, "README.md should show at least two runnable blocks"


@pytest.mark.parametrize("line,code", _BLOCKS, ids=[f"line{n}" for n, _ in _BLOCKS])
def test_readme_block_runs_on_its_own(line, code, tmp_path):
    out = _run(code, tmp_path)
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
