"""The README's Python code blocks run as written (issue 9).

Every fenced block opened with ```` ```python ```` in README.md is executed, in
order and in one namespace (as a reader pasting them into one session would),
from a temporary working directory.  A block that raises fails the test with
the block's line number in README.md.  Blocks in other languages (```` ```bash ````)
are not run.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number of the first code line, code)`` of each ```python block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _FENCE.finditer(text)]


def test_readme_has_python_blocks():
    assert python_blocks(README.read_text(encoding="utf-8")), "README.md has no ```python block"


def test_block_extraction():
    text = "intro\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = x + 1\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (9, "y = x + 1\n")]


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": "__readme__"}
    for line, code in python_blocks(README.read_text(encoding="utf-8")):
        compiled = compile(code, f"README.md (block at line {line})", "exec")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the README may show warnings; errors fail
            try:
                exec(compiled, namespace)
            except Exception as exc:  # report which block failed
                pytest.fail(f"README.md block starting at line {line} raised "
                            f"{type(exc).__name__}: {exc}")
