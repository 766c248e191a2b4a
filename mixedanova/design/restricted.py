"""Restricted formulas: accept only what a model formula needs, run nothing else.

A formula's terms are Python code that formulaic evaluates (``I(...)``,
``np.log(...)``), so a formula written by someone else can do anything Python
can.  :func:`check_restricted` parses the formula with Python's :mod:`ast`
(after mapping formula operators onto Python ones, keeping every character in
place so that errors point at the text) and accepts only

* column names (plain, dotted, in backticks or ``Q("...")``), numeric literals;
* the formula operators ``+ - * / : %in% ** ^ |`` and, inside a transform,
  arithmetic (``+ - * / // % **``, unary ``-``) and comparisons (``== != < <= > >=``);
* the transforms of :data:`ALLOWED_CALLS` (``I``, ``C`` with its contrasts and
  levels, ``log``/``log2``/``log10``/``exp``/``abs``, the ``np.`` spellings of
  ``log``/``log2``/``log10``/``log1p``/``exp``/``sqrt``/``abs``, ``scale``,
  ``center``, ``poly``, ``offset``, ``cbind``);
* strings only where they are level names: compared with a column, in ``C()``'s
  ``levels=`` and as a contrast's base level.

Anything else (attribute access beyond ``np.<allowed>``, subscripts, other calls,
dunder names, lambdas, comprehensions, f-strings, ``{...}``) raises
:class:`~mixedanova.errors.FormulaError` pointing at it, before anything is
evaluated.  The formula's length, nesting depth, integer literals, powers,
``poly`` degrees and the number of terms it expands to are bounded, so that a
formula cannot make the parser or the evaluation allocate without bound.
"""
from __future__ import annotations

import ast
import keyword
import re

from ..errors import FormulaError

__all__ = ["check_restricted", "ALLOWED_CALLS", "MAX_LENGTH", "MAX_DEPTH", "MAX_TERMS",
           "MAX_POLY_DEGREE", "MAX_POWER"]

MAX_LENGTH = 4000        # characters of a formula
MAX_DEPTH = 32           # nesting of brackets and of the parsed expression
MAX_TERMS = 1024         # terms a side may expand to (a*b*c... doubles them)
MAX_POLY_DEGREE = 20     # poly(x, degree)
MAX_POWER = 100          # |exponent| of a constant power inside a transform
MAX_FORMULA_POWER = 10   # (a + b + c)**k at formula level
MAX_INT_DIGITS = 15      # integer literals up to 10**15
MAX_STRING = 200         # characters of a level name
MAX_LEVELS = 10_000      # entries of C(..., levels=[...])

_FUNCS = ("log", "log2", "log10", "exp", "abs")
_NP_FUNCS = ("log", "log2", "log10", "log1p", "exp", "sqrt", "abs")
_CONTRASTS = ("Treatment", "Sum", "Helmert", "Poly", "Diff")
_CONTR = ("treatment", "sum", "helmert", "poly", "diff", "SAS")
#: every call a restricted formula may make (formulaic knows ``np``, not ``numpy``)
ALLOWED_CALLS = (("I", "C", "Q", "scale", "center", "poly", "offset", "cbind") + _FUNCS
                 + tuple(f"np.{f}" for f in _NP_FUNCS))

_PLACEHOLDER = "\u01eb"  # a letter: backticked names become runs of it, same length
_IDENT = re.compile(r"[^\W\d]\w*")
_DUNDER = re.compile(r"^__.*__$")
_QUOTE_CALL = re.compile(r"""Q\(\s*("[^"]*"|'[^']*')\s*\)""")


class _Source:
    """One side of the formula converted to Python syntax, same length as the text.

    ``:`` and ``%in%`` become ``@`` (padded), ``||`` becomes ``| ``, a backticked
    name and a column named like a Python keyword (``yield``) become a placeholder
    identifier of the same length (the name kept in ``quoted``).  Text inside string literals is left alone.
    """

    def __init__(self, formula: str, start: int, stop: int) -> None:
        self.formula, self.start = formula, start
        text = formula[start:stop]
        out = list(text)
        self.quoted: dict[int, str] = {}  # position in text -> backticked name
        i, quote = 0, None
        while i < len(text):
            ch = text[i]
            if quote is not None:
                if ch == "\\":
                    i += 2
                    continue
                if ch == quote:
                    quote = None
            elif ch in "'\"":
                quote = ch
            elif ch == "`":
                end = text.find("`", i + 1)
                if end < 0:
                    raise FormulaError("unterminated backtick", formula, start + i)
                if end == i + 1:
                    raise FormulaError("restricted formula: empty backticked name", formula,
                                       start + i, 2)
                ident = _PLACEHOLDER * (end - i + 1)
                self.quoted[i] = text[i + 1:end]
                out[i:end + 1] = list(ident)
                i = end + 1
                continue
            elif ch.isidentifier() and not (i and (text[i - 1].isalnum() or text[i - 1] in "_.")):
                m = _IDENT.match(text, i)
                word = m.group(0)
                if keyword.iskeyword(word) and word not in ("None", "True", "False"):
                    # a column named like a keyword (``yield``): formulaic looks it up
                    self.quoted[i] = word
                    out[i:m.end()] = list(_PLACEHOLDER * len(word))
                i = m.end()
                continue
            elif ch in "{}":
                raise FormulaError("restricted formula: '{...}' evaluates Python code; "
                                   "write I(...) instead", formula, start + i)
            elif text.startswith("%in%", i):
                out[i:i + 4] = list("@   ")
                i += 4
                continue
            elif ch == ":":
                out[i] = "@"
            elif text.startswith("||", i):
                out[i + 1] = " "
                i += 2
                continue
            i += 1
        self.text = "".join(out)
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", "(" + self.text)]

    def parse(self) -> ast.expr:
        code = "(" + self.text + ")"
        try:
            return ast.parse(code, mode="eval").body
        except SyntaxError as exc:
            off = max(0, min(len(self.text) - 1, _char_offset(code, exc) - 1))
            raise FormulaError(f"restricted formula: cannot parse this in restricted mode "
                               f"({exc.msg})", self.formula, self.start + off) from None
        except (RecursionError, MemoryError, ValueError):
            raise FormulaError("restricted formula: too deeply nested",
                               self.formula, self.start, max(1, len(self.text))) from None

    def where(self, node: ast.AST) -> tuple[int, int]:
        """(position in the formula, length) of ``node``."""
        code = "(" + self.text + ")"
        lines = code.split("\n")
        def pos(lineno: int, col: int) -> int:
            line = lines[lineno - 1]
            chars = len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))
            return self._line_starts[lineno - 1] + chars
        a = pos(node.lineno, node.col_offset)
        b = pos(node.end_lineno, node.end_col_offset) if node.end_lineno else a + 1
        return self.start + a - 1, max(1, b - a)

    def name_of(self, node: ast.Name) -> str:
        """The name a Name node stands for (a backticked name for a placeholder)."""
        if set(node.id) == {_PLACEHOLDER}:
            pos = self.where(node)[0] - self.start
            if pos in self.quoted:
                return self.quoted[pos]
        return node.id


def _char_offset(code: str, exc: SyntaxError) -> int:
    lines = code.split("\n")
    lineno = max(1, exc.lineno or 1)
    col = max(0, (exc.offset or 1) - 1)
    return sum(len(l) + 1 for l in lines[:lineno - 1]) + col


class _Checker:
    def __init__(self, src: _Source, columns) -> None:
        self.src = src
        self.columns = None if columns is None else set(map(str, columns))

    def refuse(self, node: ast.AST, why: str) -> FormulaError:
        pos, length = self.src.where(node)
        excerpt = self.src.formula[pos:pos + length]
        if len(excerpt) > 40:
            excerpt = excerpt[:37] + "..."
        return FormulaError(f"restricted formula: {excerpt!r} is refused: {why}",
                            self.src.formula, pos, length)

    # ------------------------------------------------------------ formula level
    def formula(self, node: ast.AST, depth: int = 0, bars: bool = False) -> int:
        """Check a formula-level node; returns an upper bound of its number of terms."""
        if depth > MAX_DEPTH:
            raise self.refuse(node, f"nested more than {MAX_DEPTH} levels deep")
        d = depth + 1
        if isinstance(node, ast.BinOp):
            op = node.op
            if isinstance(op, ast.BitOr):
                if not bars:
                    raise self.refuse(node, "'|' belongs in a random-effects term (lhs | group)")
                self.grouping(node.right, d)
                return self.formula(node.left, d)
            inner = bars and isinstance(op, (ast.Add, ast.Sub))
            if isinstance(op, (ast.Pow, ast.BitXor)):
                k = _int_literal(node.right)
                if k is None or not 1 <= k <= MAX_FORMULA_POWER:
                    raise self.refuse(node.right, f"the power of terms must be a whole "
                                                  f"number from 1 to {MAX_FORMULA_POWER}")
                t = self.formula(node.left, d)
                return _cap(min((t + 1) ** k, 2 ** min(t, 60) - 1))  # distinct products
            if not isinstance(op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.MatMult)):
                raise self.refuse(node, f"operator {_op_text(op)!r} is not a formula operator")
            a = self.formula(node.left, d, inner)
            b = self.formula(node.right, d, inner)
            if isinstance(op, (ast.Add, ast.Sub)):
                return _cap(a + b)
            if isinstance(op, ast.MatMult):
                return _cap(a * b)
            return _cap(a + b + a * b)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return self.formula(node.operand, d, bars)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                raise self.refuse(node, "strings are not formula terms")
            self.number(node)
            return 1
        if isinstance(node, ast.Call):
            return self.call(node, d, top=True)
        if self.name(node) is not None:
            return 1
        raise self.refuse(node, f"{_kind(node)} is not allowed in a formula")

    def grouping(self, node: ast.AST, depth: int) -> None:
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.MatMult, ast.Div)):
            self.grouping(node.left, depth + 1)
            self.grouping(node.right, depth + 1)
        elif self.name(node) is None:
            raise self.refuse(node, "a grouping factor is a column, a:b or a/b")

    # ------------------------------------------------------------- transforms
    def name(self, node: ast.AST) -> str | None:
        """The column a Name, dotted name or ``Q("...")`` refers to (None if not one)."""
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "Q":
            if (len(node.args) != 1 or node.keywords or not isinstance(node.args[0], ast.Constant)
                    or not isinstance(node.args[0].value, str)):
                raise self.refuse(node, 'Q() takes one quoted column name, Q("name")')
            return self.column(node, node.args[0].value)
        chain = _dotted(node)
        if chain is None:
            return None
        head = node
        while isinstance(head, ast.Attribute):
            head = head.value
        parts = [self.src.name_of(head)] + chain[1:]
        if parts[0] == "np" and len(parts) > 1:
            raise self.refuse(node, "attribute access is allowed only as a call np.f(...) of "
                                    f"{', '.join(_NP_FUNCS)}")
        return self.column(node, ".".join(parts))

    def column(self, node: ast.AST, name: str) -> str:
        for part in [name] + name.split("."):
            if _DUNDER.match(part):
                raise self.refuse(node, "dunder names are not allowed")
        if self.columns is not None and name not in self.columns:
            raise self.refuse(node, f"{_quote(name)} is not a column of the data")
        return name

    def number(self, node: ast.Constant) -> None:
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.refuse(node, f"{type(v).__name__} literals are not allowed")
        if isinstance(v, int) and len(str(abs(v))) > MAX_INT_DIGITS:
            raise self.refuse(node, f"integer literals are limited to {MAX_INT_DIGITS} digits")

    def call(self, node: ast.Call, depth: int, top: bool = False) -> int:
        """Check a call; returns the number of terms (that of offset()'s formula)."""
        if self.name(node) is not None:  # Q("name")
            return 1
        fname = _call_name(node.func, self.src)
        if fname is None or fname not in ALLOWED_CALLS:
            hint = ""
            if fname in ("sqrt", "log1p"):
                hint = f" (write np.{fname}(...))"
            raise self.refuse(node.func, f"calls are limited to {', '.join(ALLOWED_CALLS)}"
                                         + hint)
        if any(isinstance(a, ast.Starred) for a in node.args) or \
                any(k.arg is None for k in node.keywords):
            raise self.refuse(node, "*args and **kwargs are not allowed")
        args, kw = node.args, {k.arg: k.value for k in node.keywords}
        d = depth + 1
        if fname == "C":
            self.nargs(node, 1, 2, kw, ("contrasts", "levels", "spans_intercept"))
            self.expr(args[0], d)
            if len(args) == 2 or "contrasts" in kw:
                self.contrasts(args[1] if len(args) == 2 else kw["contrasts"], d)
            if "levels" in kw:
                self.levels(kw["levels"])
            if "spans_intercept" in kw:
                self.flag(kw["spans_intercept"])
        elif fname == "poly":
            self.nargs(node, 1, 2, kw, ("degree", "raw"))
            self.expr(args[0], d)
            deg = args[1] if len(args) == 2 else kw.get("degree")
            if deg is not None:
                k = _int_literal(deg)
                if k is None or not 1 <= k <= MAX_POLY_DEGREE:
                    raise self.refuse(deg, f"poly()'s degree must be a whole number from 1 to "
                                           f"{MAX_POLY_DEGREE}")
            if "raw" in kw:
                self.flag(kw["raw"])
        elif fname == "scale":
            self.nargs(node, 1, 1, kw, ("center", "scale", "ddof"))
            self.expr(args[0], d)
            for key in ("center", "scale"):
                if key in kw:
                    self.flag(kw[key])
            if "ddof" in kw and _int_literal(kw["ddof"]) not in (0, 1):
                raise self.refuse(kw["ddof"], "ddof must be 0 or 1")
        elif fname == "cbind":
            self.nargs(node, 2, 2, kw, ())
            for a in args:
                self.expr(a, d)
        elif fname == "offset" and top:
            self.nargs(node, 1, 1, kw, ())
            return self.formula(args[0], d)
        else:
            self.nargs(node, 1, 1, kw, ())
            self.expr(args[0], d)
        return 1

    def nargs(self, node: ast.Call, lo: int, hi: int, kw: dict, keys: tuple) -> None:
        n = len(node.args)
        if not lo <= n <= hi:
            raise self.refuse(node, f"takes {lo if lo == hi else f'{lo} to {hi}'} "
                                    f"positional argument{'s' if hi > 1 else ''}, not {n}")
        for k, v in kw.items():
            if k not in keys:
                raise self.refuse(v, f"keyword {k!r} is not allowed here"
                                     + (f" (only {', '.join(keys)})" if keys else ""))

    def flag(self, node: ast.AST) -> None:
        if not (isinstance(node, ast.Constant) and isinstance(node.value, bool)):
            raise self.refuse(node, "expected True or False")

    def levels(self, node: ast.AST) -> None:
        if not isinstance(node, (ast.List, ast.Tuple)) or len(node.elts) > MAX_LEVELS:
            raise self.refuse(node, f"levels= must be a list of at most {MAX_LEVELS} "
                                    "level names or numbers")
        for e in node.elts:
            self.literal(e)

    def literal(self, node: ast.AST) -> None:
        """A level name or a number."""
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            node = node.operand
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if len(node.value) > MAX_STRING:
                raise self.refuse(node, f"level names are limited to {MAX_STRING} characters")
            return
        if isinstance(node, ast.Constant):
            self.number(node)
            return
        raise self.refuse(node, "expected a level name or a number")

    def contrasts(self, node: ast.AST, depth: int) -> None:
        target = node.func if isinstance(node, ast.Call) else node
        name = _call_name(target, self.src)
        ok = name in _CONTRASTS or (name is not None and name.startswith("contr.")
                                    and name[6:] in _CONTR)
        if not ok:
            raise self.refuse(node, f"contrasts must be one of {', '.join(_CONTRASTS)} or "
                                    f"contr.{{{','.join(_CONTR)}}}, optionally called with "
                                    "level names")
        if isinstance(node, ast.Call):
            if any(k.arg is None for k in node.keywords) or \
                    any(isinstance(a, ast.Starred) for a in node.args):
                raise self.refuse(node, "*args and **kwargs are not allowed")
            for a in list(node.args) + [k.value for k in node.keywords]:
                if isinstance(a, ast.Constant) and (a.value is None or isinstance(a.value, bool)):
                    continue
                self.literal(a)

    def expr(self, node: ast.AST, depth: int) -> None:
        """An expression inside a transform: arithmetic and comparisons of columns."""
        if depth > MAX_DEPTH:
            raise self.refuse(node, f"nested more than {MAX_DEPTH} levels deep")
        d = depth + 1
        if isinstance(node, ast.BinOp):
            if not isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv,
                                        ast.Mod, ast.Pow)):
                raise self.refuse(node, f"operator {_op_text(node.op)!r} is not allowed "
                                        "(arithmetic + - * / // % ** and comparisons only)")
            if isinstance(node.op, ast.Pow) and not _uses_names(node.right):
                k = _number_literal(node.right)
                if k is None or abs(k) > MAX_POWER:
                    raise self.refuse(node.right, "a constant exponent must be a number "
                                                  f"literal of at most {MAX_POWER} in size")
            self.expr(node.left, d)
            self.expr(node.right, d)
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.USub, ast.UAdd)):
                raise self.refuse(node, f"operator {_op_text(node.op)!r} is not allowed")
            self.expr(node.operand, d)
        elif isinstance(node, ast.Compare):
            if not all(isinstance(o, (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE))
                       for o in node.ops):
                raise self.refuse(node, "comparisons are limited to == != < <= > >=")
            for part in [node.left] + list(node.comparators):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    self.literal(part)
                else:
                    self.expr(part, d)
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                raise self.refuse(node, "strings are allowed only as level names (compared "
                                        "with a column, in C()'s levels= or contrasts)")
            self.number(node)
        elif isinstance(node, ast.Call):
            self.call(node, d)
        elif self.name(node) is None:
            raise self.refuse(node, f"{_kind(node)} is not allowed")


def check_restricted(formula: str, columns=None) -> None:
    """Refuse ``formula`` unless every part of it is on the restricted allow list.

    Parameters
    ----------
    formula : str
        The whole formula, e.g. ``"y ~ np.log(x) + (1 | g)"``.
    columns : iterable of str, optional
        The data's columns: when given, every name must be one of them.

    Raises
    ------
    FormulaError
        Naming and pointing at the first expression that is not allowed.
    """
    if len(formula) > MAX_LENGTH:
        raise FormulaError(f"restricted formula is {len(formula)} characters long; at most "
                           f"{MAX_LENGTH} are accepted", formula[:60] + "...")
    tilde = _check_depth(formula)
    if tilde is None:
        return  # parse_formula says what is wrong; nothing is evaluated
    for start, stop, is_rhs in ((0, tilde, False), (tilde + 1, len(formula), True)):
        if not formula[start:stop].strip():
            continue
        src = _Source(formula, start, stop)
        tree = src.parse()
        terms = _Checker(src, columns).formula(tree, bars=is_rhs)
        if terms > MAX_TERMS:
            raise FormulaError(f"restricted formula: this side expands to more than "
                               f"{MAX_TERMS} terms", formula, start, max(1, stop - start))


def check_code(code: str, formula: str) -> None:
    """Refuse a piece of Python that formulaic would evaluate (a factor of ``formula``
    as formulaic parsed it) unless it is a call on the allow list; the second line
    of defence behind :func:`check_restricted`."""
    try:
        src = _Source(code, 0, len(code))
        checker = _Checker(src, None)
        tree = src.parse()
        if not isinstance(tree, ast.Call):
            checker.expr(tree, 0)
        else:
            checker.call(tree, 0)
    except FormulaError as exc:
        first = str(exc).splitlines()[0]
        raise FormulaError(f"{first} (in {_quote(code)})", formula) from None


def _check_depth(formula: str) -> int | None:
    """Bound the bracket depth; returns the position of the top-level ``~``."""
    depth, tilde, quote, tick = 0, None, None, False
    for i, ch in enumerate(formula):
        if quote is not None:
            quote = None if ch == quote else quote
        elif tick:
            tick = ch != "`"
        elif ch == "`":
            tick = True
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
            if depth > MAX_DEPTH:
                raise FormulaError(f"restricted formula is nested more than {MAX_DEPTH} "
                                   "brackets deep", formula, i)
        elif ch in ")]}":
            depth -= 1
        elif ch == "~" and depth == 0 and tilde is None:
            tilde = i
    return tilde


def _cap(n: int) -> int:
    return min(n, 10 * MAX_TERMS)


def _dotted(node: ast.AST) -> list[str] | None:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else inner + [node.attr]
    return None


def _call_name(func: ast.AST, src: _Source) -> str | None:
    chain = _dotted(func)
    if chain is None or _PLACEHOLDER in chain[0]:
        return None
    return ".".join(chain)


def _uses_names(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) for n in ast.walk(node))


def _number_literal(node: ast.AST) -> float | None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _number_literal(node.operand)
        return None if v is None else (-v if isinstance(node.op, ast.USub) else v)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool):
        return node.value
    return None


def _int_literal(node: ast.AST) -> int | None:
    v = _number_literal(node)
    return v if isinstance(v, int) else None


def _quote(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit - 3] + "...")


_OPS = {ast.BitOr: "|", ast.BitAnd: "&", ast.BitXor: "^", ast.LShift: "<<",
        ast.RShift: ">>", ast.MatMult: ":", ast.FloorDiv: "//", ast.Mod: "%",
        ast.Invert: "~", ast.Not: "not", ast.Pow: "**"}


def _op_text(op: ast.AST) -> str:
    return _OPS.get(type(op), type(op).__name__)


_KINDS = {ast.Subscript: "a subscript", ast.Lambda: "a lambda", ast.ListComp: "a comprehension",
          ast.SetComp: "a comprehension", ast.DictComp: "a comprehension",
          ast.GeneratorExp: "a generator", ast.JoinedStr: "an f-string",
          ast.Attribute: "attribute access", ast.IfExp: "a conditional expression",
          ast.BoolOp: "'and'/'or'", ast.NamedExpr: "an assignment", ast.List: "a list",
          ast.Tuple: "a tuple", ast.Dict: "a dict", ast.Set: "a set", ast.Starred: "'*'",
          ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield"}


def _kind(node: ast.AST) -> str:
    return _KINDS.get(type(node), type(node).__name__)
