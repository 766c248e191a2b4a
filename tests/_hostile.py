"""Hostile formula payloads and a canary for the restricted-mode tests (issue 23).

Each payload is Python that, if formulaic evaluated it, would touch the canary
file (delete, overwrite, read it) or the canary environment variable, run a
command, or allocate without bound.  ``{path}`` is the canary file's path.
"""
from __future__ import annotations

import os

ENV = "MIXEDANOVA_CANARY"
CONTENT = "canary: untouched\n"

# code placed inside a transform, e.g. I(<payload>)
PAYLOADS = [
    "__import__('os').remove({path!r})",
    "__import__('os').system('rm -f ' + {path!r})",
    "__import__('subprocess').run(['rm', {path!r}])",
    "open({path!r}, 'w').write('pwned')",
    "open({path!r}).read()",
    "eval(\"__import__('os').remove({path})\")",
    "exec(\"import os; os.environ['MIXEDANOVA_CANARY'] = 'pwned'\")",
    "getattr(__import__('os'), 'remove')({path!r})",
    "globals()['__builtins__']['open']({path!r}, 'w')",
    "__builtins__['exec']('import os; os.remove({path})')",
    "Days.__class__.__mro__[1].__subclasses__()",
    "().__class__.__bases__[0].__subclasses__()",
    "Days.__class__.__init__.__globals__['os'].remove({path!r})",
    "np.__dict__['save']({path!r}, Days)",
    "np.save({path!r}, Days)",
    "numpy.save({path!r}, Days)",
    "np.loadtxt({path!r})",
    "np.fromfile({path!r})",
    "Days.to_csv({path!r})",
    "pd.read_csv({path!r})",
    "os.environ.__setitem__('MIXEDANOVA_CANARY', 'pwned')",
    "__import__('os').environ.update(MIXEDANOVA_CANARY='pwned')",
    "(lambda: __import__('os').remove({path!r}))()",
    "[__import__('os').remove({path!r}) for _ in [1]]",
    "{{__import__('os').remove({path!r}) for _ in [1]}}",
    "f\"{{__import__('os').remove({path!r})}}\"",
    "Days if __import__('os').remove({path!r}) else Days",
    "Days and __import__('os').remove({path!r})",
    "(x := __import__('os'))",
    "Days[__import__('os').remove({path!r})]",
    "vars()",
    "locals()",
    "breakpoint()",
    "type(Days).mro()",
    "np.log(Days, out=__import__('os').remove({path!r}))",
    "np.log(*[__import__('os').remove({path!r})])",
    "np.ones(10**10)",
    "np.zeros((10**5, 10**5))",
    "np.lib.format.open_memmap({path!r}, mode='w+', shape=(10**9,))",
    "Days ** 10**10**10",
    "9**9**9**9",
    "'a' * 10**10",
    "123456789012345678901234567890 * Days",
    "np.random.seed(1)",
    "Q('__builtins__')",
    "`__builtins__`",
    "Days.values",
    "np.pi",
]

# whole transforms (not inside I())
TRANSFORMS = [
    "C(Days, __import__('os').remove({path!r}))",
    "C(Days, levels=[__import__('os').remove({path!r})])",
    "C(Days, Treatment(__import__('os').remove({path!r})))",
    "scale(Days, center=__import__('os').remove({path!r}))",
    "poly(Days, 10**9)",
    "poly(Days, degree=__import__('os').remove({path!r}))",
    "{{__import__('os').remove({path!r})}}",
    "np.log(Days).__class__",
    "sqrt.__globals__",
    "(" * 60 + "Days" + ")" * 60,
    "-" * 300 + "Days",
    " + ".join(["Days"] * 1500),
    "*".join(f"Days{i}" for i in range(16)),
    "(Days + Days2 + Days3)**100000",
]


def make_canary(tmp_path, monkeypatch):
    """A canary file and environment variable; returns a checker of both."""
    path = tmp_path / "canary.txt"
    path.write_text(CONTENT)
    monkeypatch.setenv(ENV, "untouched")

    def intact() -> bool:
        return (path.exists() and path.read_text() == CONTENT
                and os.environ.get(ENV) == "untouched")
    return str(path), intact


def payloads(path: str) -> list[str]:
    """Every payload as code inside a transform, with the canary's path filled in."""
    return [p.format(path=path) for p in PAYLOADS]


def transforms(path: str) -> list[str]:
    return [t.format(path=path) if "{" in t else t for t in TRANSFORMS]
