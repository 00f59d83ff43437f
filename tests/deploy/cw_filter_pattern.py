"""An evaluator for CloudWatch Logs JSON filter patterns, so tests can run our metric filters offline.

Follows the CloudWatch Logs documentation "Filter pattern syntax for metric filters, subscription
filters, filter log events, and Live Tail" (docs.aws.amazon.com/AmazonCloudWatch/latest/logs/
FilterAndPatternSyntax.html), section "Using filter patterns to match terms in JSON log events":

* a pattern is ``{ <expr> }``; ``&&`` binds tighter than ``||``; parentheses group;
* a comparison is ``<selector> <op> <value>`` with ops ``= != < > <= >=``; selectors are
  ``$.key.key[0]...`` (keys of letters, digits, ``-`` and ``_``);
* string values are double-quoted (``*`` is a wildcard inside them) or bare words; numeric values
  compare numerically; ``IS NULL``, ``IS TRUE``, ``IS FALSE`` and ``NOT EXISTS`` test a field;
* a regular expression value is wrapped in ``%...%`` (section "Supported regular expressions (regex)
  syntax"): only letters, digits, the symbols ``_ # = @ / ; , -`` and the operators
  ``^ $ ? [ ] { } | \\ * + .`` are allowed (no parentheses, no spaces, no quotes), at most two
  regular expressions per pattern, and a regex matches anywhere in the value (``%AUTHORIZED%``
  matches ``UNAUTHORIZED REQUEST``).

Documented behaviour we rely on and mirror: a comparison on a field the event does not have is false
(for ``!=`` too; use ``NOT EXISTS`` to select events without the field); a JSON pattern never matches
an event that is not a JSON object.

Syntax errors raise `PatternError` with the position, like the console's "Invalid filter pattern".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_MISSING = object()
_REGEX_ALLOWED = re.compile(r"^[A-Za-z0-9_#=@/;,\-\^$?\[\]{}|\\*+.]*$")
MAX_REGEX_PER_PATTERN = 2


class PatternError(ValueError):
    """The pattern is not valid CloudWatch JSON filter syntax (or uses an unsupported regex)."""


@dataclass(frozen=True)
class _Tok:
    kind: str  # ( ) AND OR OP SEL STR RE NUM WORD KW
    text: str
    pos: int
    value: Any = None


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<lp>\() | (?P<rp>\))
  | (?P<and>&&) | (?P<or>\|\|)
  | (?P<op>!=|<=|>=|=|<|>)
  | (?P<sel>\$(?:\.[A-Za-z0-9_\-]+|\[\d+\])+)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<re>%[^%]*%)
  | (?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![A-Za-z0-9_.*:/@\-]))
  | (?P<kw>IS|NOT|NULL|TRUE|FALSE|EXISTS)(?![A-Za-z0-9_])
  | (?P<word>[A-Za-z0-9_.*:/@\-]+)
    """,
    re.VERBOSE,
)


def _tokenize(body: str, offset: int) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(body):
        m = _TOKEN.match(body, pos)
        if not m:
            raise PatternError(f"unexpected {body[pos]!r} at position {pos + offset}")
        kind = m.lastgroup or ""
        text = m.group(0)
        at = pos + offset
        pos = m.end()
        if kind == "ws":
            continue
        if kind == "str":
            toks.append(_Tok("STR", text, at, json.loads(text)))
        elif kind == "re":
            expr = text[1:-1]
            if not expr:
                raise PatternError(f"empty regular expression at position {at}")
            if not _REGEX_ALLOWED.match(expr):
                bad = next(c for c in expr if not _REGEX_ALLOWED.match(c))
                raise PatternError(f"regular expression %{expr}% at position {at} uses {bad!r}, "
                                   f"which CloudWatch filter regex does not support")
            try:
                compiled = re.compile(expr)
            except re.error as exc:
                raise PatternError(f"bad regular expression %{expr}% at position {at}: {exc}") from exc
            toks.append(_Tok("RE", text, at, compiled))
        elif kind == "num":
            toks.append(_Tok("NUM", text, at, float(text)))
        else:
            toks.append(_Tok({"lp": "(", "rp": ")", "and": "AND", "or": "OR", "op": "OP",
                              "sel": "SEL", "kw": "KW", "word": "WORD"}[kind], text, at))
    return toks


def _select(doc: Any, selector: str) -> Any:
    cur = doc
    for key, index in re.findall(r"\.([A-Za-z0-9_\-]+)|\[(\d+)\]", selector):
        if key:
            if not isinstance(cur, dict) or key not in cur:
                return _MISSING
            cur = cur[key]
        else:
            i = int(index)
            if not isinstance(cur, list) or i >= len(cur):
                return _MISSING
            cur = cur[i]
    return cur


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _wildcard(text: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(part) for part in text.split("*")) + "$", re.DOTALL)


Predicate = Callable[[Any], bool]


def _comparison(sel: str, op: str, tok: _Tok) -> Predicate:
    # `hit` is the value test of each branch, used by both returns at the end: a lambda per branch
    # (E731) reads shorter than three nested defs.
    if tok.kind == "RE":
        regex: re.Pattern[str] = tok.value
        if op not in ("=", "!="):
            raise PatternError(f"operator {op} cannot take a regular expression (position {tok.pos})")
        hit = lambda v: isinstance(v, str) and regex.search(v) is not None  # noqa: E731
    elif tok.kind == "NUM":
        num = tok.value
        ops: dict[str, Callable[[float, float], bool]] = {
            "=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
            ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}
        cmp = ops[op]
        if op == "!=":
            return lambda doc: (v := _select(doc, sel)) is not _MISSING and not (_is_number(v) and v == num)
        return lambda doc: _is_number(v := _select(doc, sel)) and cmp(v, num)
    elif tok.kind in ("STR", "WORD"):
        if op not in ("=", "!="):
            raise PatternError(f"operator {op} needs a number, got {tok.text} (position {tok.pos})")
        text = tok.value if tok.kind == "STR" else tok.text
        if "*" in text:
            rx = _wildcard(text)
            hit = lambda v: isinstance(v, str) and rx.match(v) is not None  # noqa: E731
        else:
            hit = lambda v: isinstance(v, str) and v == text  # noqa: E731
    else:
        raise PatternError(f"expected a value after {op}, got {tok.text!r} at position {tok.pos}")
    if op == "=":
        return lambda doc: (v := _select(doc, sel)) is not _MISSING and hit(v)
    return lambda doc: (v := _select(doc, sel)) is not _MISSING and not hit(v)


_NAMES = {"SEL": "a selector like $.field", "OP": "an operator", "KW": "a keyword",
          "STR": "a quoted string", "WORD": "a word", "NUM": "a number", "RE": "a %regex%",
          "(": "'('", ")": "')'"}


def _expected(kinds: tuple[str, ...]) -> str:
    return " or ".join(_NAMES.get(k, k) for k in kinds)


class _Parser:
    def __init__(self, toks: list[_Tok]):
        self.toks = toks
        self.i = 0
        self.regex_count = sum(1 for t in toks if t.kind == "RE")

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, *kinds: str) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise PatternError(f"pattern ends early: expected {_expected(kinds)}")
        if tok.kind not in kinds:
            raise PatternError(f"expected {_expected(kinds)} at position {tok.pos}, got {tok.text!r}")
        self.i += 1
        return tok

    def parse(self) -> Predicate:
        pred = self.or_expr()
        if self.peek() is not None:
            tok = self.peek()
            assert tok is not None
            raise PatternError(f"unexpected {tok.text!r} at position {tok.pos}")
        return pred

    def or_expr(self) -> Predicate:
        parts = [self.and_expr()]
        while (t := self.peek()) is not None and t.kind == "OR":
            self.i += 1
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else (lambda doc: any(p(doc) for p in parts))

    def and_expr(self) -> Predicate:
        parts = [self.unary()]
        while (t := self.peek()) is not None and t.kind == "AND":
            self.i += 1
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else (lambda doc: all(p(doc) for p in parts))

    def unary(self) -> Predicate:
        tok = self.peek()
        if tok is not None and tok.kind == "(":
            self.i += 1
            inner = self.or_expr()
            self.take(")")
            return inner
        sel = self.take("SEL").text
        nxt = self.take("OP", "KW")
        if nxt.kind == "OP":
            return _comparison(sel, nxt.text, self.take("STR", "WORD", "NUM", "RE"))
        if nxt.text == "IS":
            what = self.take("KW")
            if what.text == "NULL":
                return lambda doc: _select(doc, sel) is None
            if what.text == "TRUE":
                return lambda doc: _select(doc, sel) is True
            if what.text == "FALSE":
                return lambda doc: _select(doc, sel) is False
            raise PatternError(f"IS must be followed by NULL, TRUE or FALSE (position {what.pos})")
        if nxt.text == "NOT":
            what = self.take("KW")
            if what.text != "EXISTS":
                raise PatternError(f"NOT must be followed by EXISTS (position {what.pos})")
            return lambda doc: _select(doc, sel) is _MISSING
        raise PatternError(f"unexpected {nxt.text!r} after {sel} at position {nxt.pos}")


@dataclass(frozen=True)
class FilterPattern:
    text: str
    regex_count: int
    _pred: Predicate

    def matches(self, message: str) -> bool:
        """Whether a log event whose message is this text counts, as a metric filter would decide."""
        try:
            doc = json.loads(message)
        except ValueError:
            return False
        return isinstance(doc, dict) and bool(self._pred(doc))


def compile_pattern(text: str) -> FilterPattern:
    """Parse a JSON filter pattern; raises PatternError naming what is wrong and where."""
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        raise PatternError("only JSON filter patterns ({ ... }) are supported here")
    start = text.index("{") + 1
    toks = _tokenize(stripped[1:-1], start)
    if not toks:
        raise PatternError("empty JSON filter pattern")
    parser = _Parser(toks)
    if parser.regex_count > MAX_REGEX_PER_PATTERN:
        raise PatternError(f"{parser.regex_count} regular expressions in one pattern; "
                           f"CloudWatch allows at most {MAX_REGEX_PER_PATTERN}")
    return FilterPattern(text, parser.regex_count, parser.parse())


def matches(pattern: str, message: str) -> bool:
    return compile_pattern(pattern).matches(message)
