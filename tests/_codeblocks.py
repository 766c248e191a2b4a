"""Fenced code blocks of Markdown pages, and running one in a fresh interpreter
(shared by tests/test_readme.py and tests/test_docs_examples.py)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_FENCE = re.compile(r"^```(\w+)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def code_blocks(text: str, language: str = "python") -> list[tuple[int, str]]:
    """``(line number of the first code line, code)`` of each block in ``language``."""
    return [(text.count("\n", 0, m.start(2)) + 1, m.group(2)) for m in _FENCE.finditer(text)
            if m.group(1) == language]


def run_block(code: str, folder: Path) -> subprocess.CompletedProcess:
    """Run ``code`` as ``python block.py`` in ``folder`` (headless matplotlib, the
    project root first on the path), capturing its output."""
    script = folder / "block.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                        os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, str(script)], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)
