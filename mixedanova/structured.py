"""glmmTMB / lme4 2.0 spellings of structured random-effect covariances.

``us(x | g)`` is lme4's ``(x | g)`` (an unstructured covariance) and
``diag(x | g)`` with numeric columns is ``(x || g)``: both are rewritten to lme4
syntax.  A structured covariance over the levels of a factor,
``ar1(0 + f | g)``, ``cs(0 + f | g)``, ``toep(0 + f | g)`` or ``diag(0 + f | g)``,
gives every ``g`` a random effect per level of ``f`` with an AR(1),
heterogeneous compound-symmetry, heterogeneous Toeplitz or diagonal covariance
(glmmTMB's definitions: ``cs`` and ``toep`` have one SD per level), plus the
independent residual.  With one observation per ``(g, f)`` cell at most, that is
the marginal model ``Sigma = G + sigma^2 I`` over the levels of ``f`` (a level a
group lacks removes its row and column), fitted by
:mod:`mixedanova.likelihood.marginal` with glmmTMB's parameters (``log_sd``,
correlation parameters, ``betad = log sigma^2``) when such a term is the
formula's only random term; otherwise (next to other random terms, or with
``fixed=`` naming random-effect parameters) it stays a random term with a
structured covariance (:mod:`mixedanova.design.covstruct`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from .errors import DesignError

__all__ = ["StructuredTerm", "rewrite_structured"]

_START = re.compile(r"(?<![\w.])(us|diag|cs|ar1|toep)\s*\(")
_ZERO_PLUS = re.compile(r"^\s*0\s*\+\s*([^\W\d][\w.]*)\s*$")


@dataclass(frozen=True)
class StructuredTerm:
    """A structured random-effect term over the levels of the factor ``time``
    within ``group`` (see the module docstring); the ``residual=`` it becomes."""

    kind: str
    group: str
    time: str
    source: str = ""

    def columns(self) -> tuple[str, ...]:
        return tuple(c.strip() for c in re.split(r"[:/]", self.group)) + (self.time,)


def _closing(text: str, start: int) -> int:
    """Index of the parenthesis closing the one at ``start - 1``."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise DesignError(f"unbalanced parentheses in {text!r}")


def _numeric(data: pd.DataFrame, name: str) -> bool:
    return name in data.columns and pd.api.types.is_numeric_dtype(data[name]) and \
        not pd.api.types.is_bool_dtype(data[name])


def rewrite_structured(formula: str, data: pd.DataFrame,
                       marginal: bool = True) -> tuple[str, StructuredTerm | None]:
    """``formula`` with ``us()`` and numeric ``diag()`` in lme4 syntax, and the
    structured term over a factor taken out of it when it is the only random term
    (or None).

    Other structured terms (``cs(1 + x | g)``, a structured term next to other
    random terms, or every structured term when ``marginal`` is False, e.g. when
    ``fixed=`` names random-effect parameters) stay in the formula: the parser
    reads them as random terms with that covariance
    (:mod:`mixedanova.design.covstruct`).

    Raises
    ------
    DesignError
        ``diag()`` over a column that is neither numeric nor ``0 + factor``.
    """
    if not isinstance(formula, str) or not _START.search(formula):
        return formula, None
    out, found, pos = [], [], 0
    for m in _START.finditer(formula):
        if m.start() < pos:
            continue
        end = _closing(formula, m.end())
        inner = formula[m.end():end]
        if "|" not in inner:
            continue  # a function call, not a random term
        kind = m.group(1)
        lhs, group = inner.split("|", 1)
        lhs, group = lhs.strip(), group.strip().lstrip("|").strip()
        text = formula[m.start():end + 1]
        zero = _ZERO_PLUS.match(lhs)
        factor = zero is not None and not _numeric(data, zero.group(1))
        out.append(formula[pos:m.start()])
        if kind == "us":
            out.append(f"({lhs} | {group})")
        elif kind == "diag" and not factor:
            terms = [t.strip() for t in lhs.split("+")]
            bad = [t for t in terms if t not in ("0", "1") and not _numeric(data, t)]
            if bad:
                raise DesignError(f"{text}: diag() takes numeric columns or 0 + one factor; "
                                  f"{', '.join(map(repr, bad))} is not a numeric column")
            out.append(f"({lhs} || {group})")
        elif factor:
            found.append((len(out), StructuredTerm(kind, group, zero.group(1), text)))
            out.append(text)
        else:
            out.append(text)
        pos = end + 1
    out.append(formula[pos:])
    sole = len(found) == 1 and marginal
    if sole:
        rest = "".join(out[:found[0][0]] + out[found[0][0] + 1:])
        sole = "|" not in rest and not _START.search(rest)
    if not sole:
        return "".join(out), None
    out[found[0][0]] = ""
    new = "".join(out)  # tidy the "+" left where the term was
    new = re.sub(r"\+\s*(?=\+|$)", "", new)
    new = re.sub(r"~\s*\+", "~ ", new).strip()
    if new.endswith("~"):
        new += " 1"
    return new, found[0][1]
