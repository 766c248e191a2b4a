"""Parse lme4 model formulas.

A formula such as ``Reaction ~ Days + (Days | Subject)`` has three parts: the
response, the fixed-effects part (handed to formulaic, which knows ``C()``,
``I()``, ``np.log()``, ``a*b``, ``0 +`` ...) and the random-effects terms, which
formulaic does not understand.  As lme4 does (``findbars``/``nobars``), the bar
terms are taken out of the right-hand side first and expanded:

* ``(x | g)``     -> one term, correlated intercept and slope (``1 + x``);
* ``(x || g)``    -> independent terms ``(1 | g) + (0 + x | g)``;
* ``(1 | a/b)``   -> ``(1 | a) + (1 | b:a)``;
* ``(1 | a:b)``   -> the interaction of ``a`` and ``b`` as grouping factor;
* ``cs(1 + x | g)`` and glmmTMB's other structures (``us``, ``diag``, ``ar1``,
  ``toep``) -> one term with that covariance structure
  (:mod:`mixedanova.design.covstruct`).

As lme4 (``expandSlash``), the nested term of ``a/b`` is named ``b:a``.  A
variable may be written plain (``y.val``, ``grüppe``), in backticks or as
formulaic's ``Q("...")`` anywhere a name can appear; :func:`formula_variables`
finds the data columns a side of the formula uses.

Malformed formulas raise :class:`FormulaError`, whose message shows the formula
with a caret under the offending text (formulaic's own syntax errors included).
"""
from __future__ import annotations

import ast
import keyword
import re
from dataclasses import dataclass
from functools import lru_cache


from ..errors import FormulaError
from .restricted import check_code, check_restricted

__all__ = ["FormulaError", "RandomTermSpec", "ParsedFormula", "parse_formula", "split_summands",
           "formula_variables", "strip_quotes", "same_group", "quote_name", "grouping_text"]

# a variable name: an identifier (any script, dots allowed, as R's), a backticked
# name, or formulaic's Q("name")
_QUOTED = r"""Q\(\s*(?:"[^"]*"|'[^']*')\s*\)"""
_NAME = rf"(?:[^\W\d][\w.]*|\.[^\W\d][\w.]*|`[^`]+`|{_QUOTED})"
_OFFSET_RE = re.compile(r"^offset\s*\((.*)\)$", re.S)
_GROUP_RE = re.compile(rf"^\s*{_NAME}\s*(?:[:/]\s*{_NAME}\s*)*$")
_QUOTED_RE = re.compile(rf"`[^`]+`|{_QUOTED}")
_STRUCT_RE = re.compile(r"^(us|diag|cs|ar1|toep)\s*(\(.*\))$", re.S)
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m|[\u29da\u29db]")


@dataclass(frozen=True)
class RandomTermSpec:
    """One random-effects term after expansion.

    Attributes
    ----------
    expr : str
        The left-hand side as a formulaic formula, e.g. ``"1 + Days"`` or ``"0 + Days"``.
    factors : tuple of str
        The variables whose interaction is the grouping factor, e.g. ``("a", "b")``.
    source : str
        The bar term as the user wrote it (for messages).
    """

    expr: str
    factors: tuple[str, ...]
    source: str
    label: str | None = None
    structure: str = "us"
    """The covariance structure (:data:`mixedanova.design.covstruct.KINDS`)."""

    @property
    def group(self) -> str:
        """Grouping-factor label as lme4 prints it: ``"a:b"`` for ``(1|a:b)``,
        ``"b:a"`` and ``"c:(b:a)"`` for the terms that ``(1|a/b/c)`` expands to."""
        return self.label or ":".join(self.factors)


@dataclass(frozen=True)
class ParsedFormula:
    """A formula split into response, fixed part and random terms."""

    formula: str
    response: str
    fixed: str
    random: tuple[RandomTermSpec, ...]
    offsets: tuple[str, ...] = ()
    """Expressions of the ``offset(expr)`` terms of the fixed part (added to the
    linear predictor with coefficient 1, as in R)."""
    restricted: bool = False
    """Parsed in restricted mode (:mod:`mixedanova.design.restricted`): the design
    checks the names against the data's columns before evaluating anything."""

    @property
    def fixed_formula(self) -> str:
        """``response ~ fixed`` for formulaic."""
        return f"{self.response} ~ {self.fixed}"


def parse_formula(formula: str, restricted: bool = False) -> ParsedFormula:
    """Split an lme4 formula into response, fixed part and random terms.

    Parameters
    ----------
    formula : str
        E.g. ``"y ~ treat + (1|blend)"``.
    restricted : bool
        Accept only column names, numbers, formula and arithmetic operators and the
        allow-listed transforms (:func:`mixedanova.design.restricted.check_restricted`),
        for formulas from untrusted sources; checked before formulaic sees the text.

    Returns
    -------
    ParsedFormula

    Raises
    ------
    FormulaError
        On unbalanced parentheses, a missing ``~`` or response, a bar outside
        parentheses, an empty side of a bar, or an unsupported grouping expression.
    """
    if not isinstance(formula, str):
        raise FormulaError(f"formula must be a string, not {type(formula).__name__}")
    if restricted:
        check_restricted(formula)
    _check_parentheses(formula)
    tilde = _top_level_positions(formula, "~")
    if not tilde:
        raise FormulaError("formula has no '~' separating response and terms", formula)
    if len(tilde) > 1:
        raise FormulaError("formula has more than one '~'", formula, tilde[1])
    t = tilde[0]
    response = formula[:t].strip()
    if not response:
        raise FormulaError("formula has no response left of '~'", formula, t)
    rhs_offset = t + 1
    rhs = formula[rhs_offset:]
    if not rhs.strip():
        raise FormulaError("formula has nothing right of '~'", formula, t)
    fixed_pieces: list[str] = []
    random_terms: list[RandomTermSpec] = []
    offsets: list[str] = []
    for sign, start, text in split_summands(rhs):
        stripped = text.strip()
        pos = rhs_offset + start + (len(text) - len(text.lstrip()))
        if not stripped:
            raise FormulaError(f"empty term next to '{sign}'", formula, pos - 1 if pos else 0)
        off = _OFFSET_RE.match(stripped)
        if off is not None:
            if sign == "-" or not off.group(1).strip():
                raise FormulaError("offset() must be added with one expression, e.g. "
                                   "+ offset(log_exposure)", formula, pos, len(stripped))
            offsets.append(off.group(1).strip())
            continue
        kind = _STRUCT_RE.match(stripped)
        bar = _bar_group(kind.group(2) if kind else stripped)
        if kind and bar is not None:
            if bar[2]:
                raise FormulaError(f"'||' cannot be used inside {kind.group(1)}(): write "
                                   f"{kind.group(1)}(x | g)", formula, pos, len(stripped))
            if sign == "-":
                raise FormulaError("a random-effects term cannot be subtracted", formula, pos,
                                   len(stripped))
            random_terms.extend(_expand_bar(bar, stripped, formula, pos, kind.group(1)))
            continue
        if bar is None:
            if _top_level_positions(stripped, "|"):
                raise FormulaError(
                    "random-effects term must be in parentheses, e.g. (1 | g)",
                    formula, pos, len(stripped))
            fixed_pieces.append(f"{sign} {stripped}" if fixed_pieces or sign == "-" else stripped)
            continue
        if sign == "-":
            raise FormulaError("a random-effects term cannot be subtracted", formula, pos,
                               len(stripped))
        random_terms.extend(_expand_bar(bar, stripped, formula, pos))
    fixed = " ".join(fixed_pieces).strip() or "1"
    if fixed.startswith("+"):
        fixed = fixed[1:].strip()
    _check_syntax(response, formula, 0, t)
    _check_syntax(fixed, formula, rhs_offset, len(rhs))
    if restricted:  # and what formulaic will evaluate, as formulaic parses it
        for part in [response, fixed] + [r.expr for r in random_terms] + offsets:
            try:
                terms = _parse_terms(part)
            except Exception:  # noqa: BLE001 - formulaic will refuse it too, unevaluated
                continue
            for term in terms:
                for code, how in term:
                    if how == "PYTHON":
                        check_code(code, formula)
    return ParsedFormula(formula=formula, response=response, fixed=fixed,
                         random=tuple(random_terms), offsets=tuple(offsets),
                         restricted=restricted)


def _check_parentheses(formula: str) -> None:
    stack: list[int] = []
    in_tick = False
    for i, ch in enumerate(formula):
        if ch == "`":
            in_tick = not in_tick
        elif in_tick:
            continue
        elif ch == "(":
            stack.append(i)
        elif ch == ")":
            if not stack:
                raise FormulaError("unbalanced parentheses: ')' without '('", formula, i)
            stack.pop()
    if in_tick:
        raise FormulaError("unterminated backtick", formula, formula.rfind("`"))
    if stack:
        raise FormulaError("unbalanced parentheses: '(' is never closed", formula, stack[-1])


def _depth_walk(text: str):
    """Yield (index, char, depth) skipping backticked names."""
    depth = 0
    in_tick = False
    for i, ch in enumerate(text):
        if ch == "`":
            in_tick = not in_tick
            continue
        if in_tick:
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        yield i, ch, depth


def _top_level_positions(text: str, char: str) -> list[int]:
    return [i for i, ch, d in _depth_walk(text) if ch == char and d == 0]


def split_summands(rhs: str) -> list[tuple[str, int, str]]:
    """Split at top-level ``+`` and ``-`` (binary or leading), keeping signs and offsets."""
    out: list[tuple[str, int, str]] = []
    start = 0
    sign = "+"
    for i, ch, d in _depth_walk(rhs):
        if d == 0 and ch in "+-":
            if i == 0 or not rhs[:i].strip():
                sign = ch
                start = i + 1
                continue
            # '**' or a '-' inside a number exponent such as 1e-3 is not a split point
            prev = rhs[:i].rstrip()
            if ch == "-" and prev and prev[-1] in "eE" and re.search(r"\d[eE]$", prev):
                continue
            if prev.endswith(("*", "/", ":", "^", "~")):
                continue
            out.append((sign, start, rhs[start:i]))
            sign = ch
            start = i + 1
    out.append((sign, start, rhs[start:]))
    return out


def _bar_group(term: str) -> tuple[str, str, bool] | None:
    """Return (lhs, grouping, double_bar) if ``term`` is ``( lhs | g )``."""
    if not (term.startswith("(") and term.endswith(")")):
        return None
    # the outer parentheses must enclose the whole term
    for i, ch, d in _depth_walk(term):
        if d == 0 and i < len(term) - 1:
            return None
    inner = term[1:-1]
    bars = _top_level_positions(inner, "|")
    if not bars:
        return None
    first = bars[0]
    double = len(bars) >= 2 and bars[1] == first + 1
    expected = 2 if double else 1
    if len(bars) != expected:
        return ("\0", inner, double)  # signals "too many bars"
    lhs = inner[:first]
    rhs = inner[first + expected:]
    return (lhs, rhs, double)


def _expand_bar(bar: tuple[str, str, bool], term: str, formula: str,
                pos: int, structure: str = "us") -> list[RandomTermSpec]:
    lhs, grouping, double = bar
    if lhs == "\0":
        raise FormulaError("too many '|' in a random-effects term", formula, pos, len(term))
    if not lhs.strip():
        raise FormulaError("random-effects term has nothing left of '|' (write (1 | g))",
                           formula, pos, len(term))
    if not grouping.strip():
        raise FormulaError("random-effects term has no grouping factor right of '|'",
                           formula, pos, len(term))
    if not _GROUP_RE.match(grouping):
        raise FormulaError(
            "grouping factor must be a variable, an interaction a:b or nesting a/b",
            formula, pos, len(term))
    groups = _expand_grouping(grouping)
    lhs = lhs.strip()
    _check_syntax(lhs, formula, pos, len(term))
    exprs = _split_independent(lhs, formula, pos, term) if double else [_normalize_lhs(lhs)]
    return [RandomTermSpec(expr=e, factors=g, source=term, label=label, structure=structure)
            for g, label in groups for e in exprs]


def strip_quotes(name: str) -> str:
    """The variable a name refers to: ```a b``` and ``Q("a b")`` -> ``a b``."""
    name = name.strip()
    if len(name) > 1 and name.startswith("`") and name.endswith("`"):
        return name[1:-1]
    m = re.fullmatch(_QUOTED, name)
    if m:
        inner = name[name.index("(") + 1:name.rindex(")")].strip()
        return inner[1:-1]
    return name


def _expand_grouping(grouping: str) -> list[tuple[tuple[str, ...], str | None]]:
    """Grouping factors and lme4's labels of a grouping expression.

    ``a:b`` -> ``[((a, b), None)]`` (label ``"a:b"``).  Nesting follows lme4's
    ``expandSlash``: ``a/b/c`` -> ``a``, ``b:a`` and ``c:(b:a)``; the factors of a
    nested term run from the innermost out, so its levels read ``"c1:b1:a1"``.
    """
    nests = [tuple(strip_quotes(p) for p in _split_at(part, ":"))
             for part in _split_at(grouping, "/")]
    if len(nests) == 1:
        return [(nests[0], None)]
    out: list[tuple[tuple[str, ...], str | None]] = []
    factors: tuple[str, ...] = ()
    label = ""
    for part in nests:
        own = ":".join(part)
        if not factors:
            label = own
        else:
            outer = f"({label})" if ":" in label else label
            label = f"{own}:{outer}"
        factors = part + factors
        out.append((factors, label))
    return out


def quote_name(name: str) -> str:
    """``name`` as it can be written in a formula (backticked unless a plain name)."""
    return name if re.fullmatch(r"[^\W\d][\w.]*", name) else f"`{name}`"


def grouping_text(factors: tuple[str, ...]) -> str:
    """A grouping expression for ``factors`` that parses back to the same factors."""
    return ":".join(quote_name(f) for f in factors)


def same_group(name: str, group: str) -> bool:
    """True when ``name`` spells grouping factor ``group`` with its factors in any
    order (``"batch:sample"`` and ``"sample:batch"``; parentheses ignored)."""
    if name == group:
        return True
    return _group_key(name) == _group_key(group)


def _group_key(name: str) -> frozenset:
    parts = [p.strip().strip("()").strip() for p in re.split(r"[:/()]", str(name))]
    return frozenset(strip_quotes(p) for p in parts if p)


def _split_at(text: str, char: str) -> list[str]:
    pieces, start = [], 0
    for i in _top_level_positions(text, char):
        pieces.append(text[start:i])
        start = i + 1
    pieces.append(text[start:])
    return pieces


def _has_intercept_removal(summands: list[tuple[str, int, str]]) -> tuple[bool, bool]:
    """(explicit 1 present, intercept removed) for a list of summands."""
    removed = any((s == "+" and t.strip() == "0") or (s == "-" and t.strip() == "1")
                  for s, _, t in summands)
    one = any(s == "+" and t.strip() == "1" for s, _, t in summands)
    return one, removed


def _normalize_lhs(lhs: str) -> str:
    summands = split_summands(lhs)
    one, removed = _has_intercept_removal(summands)
    if removed or one:
        return lhs
    return f"1 + {lhs}"


def _split_independent(lhs: str, formula: str, pos: int, term: str) -> list[str]:
    """``x || g`` -> ['1', '0 + x']: one term per summand, as lme4's ``||``."""
    summands = split_summands(lhs)
    one, removed = _has_intercept_removal(summands)
    exprs: list[str] = [] if removed else ["1"]
    for sign, _, text in summands:
        t = text.strip()
        if t in ("0", "1"):
            continue
        if sign == "-":
            raise FormulaError("'-' terms are not supported inside (x || g)", formula, pos,
                               len(term))
        exprs.append(f"0 + {t}")
    if not exprs:
        raise FormulaError("random-effects term has no terms left of '||'", formula, pos,
                           len(term))
    return exprs


def _check_syntax(text: str, formula: str, pos: int, length: int) -> None:
    """Let formulaic parse ``text`` (a side or a term's left-hand side) now, so that
    its syntax errors come out as :class:`FormulaError` pointing into ``formula``."""
    try:
        _parse_terms(text)
    except Exception as exc:  # formulaic's parser raises several types
        detail = _ANSI_RE.sub("", str(exc)).strip().splitlines()
        words = [w for w in re.findall(r"[^\W\d]\w*", _QUOTED_RE.sub(
            lambda m: " " + strip_quotes(m.group(0)) + " ", text)) if keyword.iskeyword(w)]
        hint = (f"; {words[0]!r} is a Python keyword, which formulaic cannot evaluate inside "
                f"an expression: rename the column") if words else ""
        raise FormulaError(f"cannot parse {text.strip()!r}: "
                           f"{detail[0] if detail else type(exc).__name__}{hint}",
                           formula, pos, max(1, length)) from None


@lru_cache(maxsize=256)
def _parse_terms(text: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    """formulaic's terms of ``text``: per term its factors as (expression, how evaluated)."""
    from formulaic import Formula  # imported where used: it costs 0.2 s at import

    return tuple(tuple((str(f.expr), f.eval_method.name) for f in term.factors)
                 for term in Formula(text))


def formula_variables(expr: str, columns=()) -> list[str]:
    """Data variables that ``expr`` (one side of a formula) uses, in order of appearance.

    A name may be plain (``x``, ``y.val``, ``grüppe``), backticked (```y val```)
    or quoted (``Q("y val")``).  Inside a Python expression (``np.log(y.val)``), a
    dotted name is the longest of its prefixes that is one of ``columns``
    (``y.val`` when that is a column, else ``y.val`` all the same, so that a
    message names what the user wrote); called names (``np.log``, ``C``) and
    modules are not variables.
    """
    cols = set(map(str, columns))
    out: list[str] = []
    for term in _parse_terms(expr):
        for text, how in term:
            if how == "LITERAL":
                continue
            names = [strip_quotes(text)] if how == "LOOKUP" else _python_names(text, cols)
            for n in names:
                if n not in out:
                    out.append(n)
    return out


def _python_names(code: str, cols: set) -> list[str]:
    quoted: list[str] = []

    def hold(m: re.Match) -> str:
        quoted.append(strip_quotes(m.group(0)))
        return f"__q{len(quoted) - 1}__"

    body = _QUOTED_RE.sub(hold, code)
    try:
        tree = ast.parse(body, mode="eval")
    except SyntaxError:
        return quoted
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            skip.add(id(node.func))  # np.log, C, I ...: functions, not variables
        if isinstance(node, ast.Attribute):
            skip.add(id(node.value))  # y of y.val: part of a longer chain
    names: list[str] = []
    for node in ast.walk(tree):
        chain = _dotted(node)
        if chain is None or id(node) in skip:
            continue
        head = chain.split(".")[0]
        m = re.fullmatch(r"__q(\d+)__", head)
        if m:
            names.append(quoted[int(m.group(1))])
            continue
        if head in _context_names() and head not in cols:
            continue
        parts = chain.split(".")
        pick = next((".".join(parts[:k]) for k in range(len(parts), 0, -1)
                     if ".".join(parts[:k]) in cols), chain)
        names.append(pick)
    return list(dict.fromkeys(names))


@lru_cache(maxsize=1)
def _context_names() -> frozenset:
    """Names formulaic's evaluation context provides (its transforms and modules);
    formulaic is imported on first use, not with the package (0.2 s)."""
    try:
        from formulaic.transforms import TRANSFORMS
    except ImportError:  # pragma: no cover - older formulaic
        TRANSFORMS = {}
    return frozenset({"np", "numpy", "pd", "pandas", "math", "scipy"} | set(TRANSFORMS))


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None
