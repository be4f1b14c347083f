"""The ``--where`` language (docs/filtering.md): parsed by a Pratt parser, never by Python's eval,
and compiled once into nested closures, so a record costs a few closure calls rather than a walk
of a tree.
"""

from __future__ import annotations

import decimal
import operator
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from .errors import UsageError

Fn = Callable[[Any], Any]

# Deep enough for any real filter, shallow enough that neither the parser nor the compiled
# closures come near Python's recursion limit.
MAX_DEPTH = 100
_TOO_DEEP = f"expression nested deeper than {MAX_DEPTH} levels"

# What compares with what is decided by a value's kind (bool is not a number here, unlike Python).
_KIND = {type(None): "null", bool: "bool", int: "number", float: "number", str: "string",
         bytes: "bytes", list: "list", dict: "object"}
_kind_of_type = _KIND.get
_ORDERED = frozenset({"number", "string", "bytes"})
_LOOKUP_ERRORS = (KeyError, IndexError, TypeError)  # a missing key, a short list, a None


def kind_of(value: Any) -> str:
    """The kind of a value as the language compares it: null, bool, number, string, bytes, list,
    object."""
    kind = _kind_of_type(value.__class__)
    if kind is not None:
        return kind
    # Subclasses and Avro logical types (Decimal, datetime, UUID) are rare: isinstance only here.
    for base, name in ((bool, "bool"), (int | float | decimal.Decimal, "number"), (str, "string"),
                       (bytes, "bytes"), (list, "list"), (dict, "object")):
        if isinstance(value, base):
            return name
    return value.__class__.__name__


def _true(value: Any) -> bool:
    return value is not None and value is not False


def _equal(a: Any, b: Any) -> bool:
    return kind_of(a) == kind_of(b) and a == b


def _contains(item: Any, container: Any) -> bool:
    kind = kind_of(container)
    if kind == "list":
        return any(_equal(item, element) for element in container)
    return kind in ("string", "object") and kind_of(item) == "string" and item in container


class _Expr:
    """A compiled sub-expression, ``fn(datum)``, with what the parser needs to fold and check."""

    __slots__ = ("boolean", "const", "depth", "fn", "path", "value")

    def __init__(self, fn: Fn, boolean: bool = False, depth: int = 1, const: bool = False,
                 value: Any = None, path: tuple | None = None) -> None:
        self.fn, self.boolean, self.depth = fn, boolean, depth
        self.const, self.value, self.path = const, value, path

    def test(self) -> Callable[[Any], bool]:
        fn = self.fn
        return fn if self.boolean else lambda datum: _true(fn(datum))


def _const(value: Any) -> _Expr:
    return _Expr(lambda datum: value, isinstance(value, bool), 0, True, value)


def _getter(steps: tuple, exists: bool = False) -> Fn:
    if len(steps) == 2 and not exists:  # `candidate.rb`, by far the most common shape
        first, second = steps

        def get2(datum: Any) -> Any:
            try:
                return datum[first][second]
            except _LOOKUP_ERRORS:
                return None
        return get2

    def get(datum: Any) -> Any:
        try:
            for step in steps:
                datum = datum[step]
        except _LOOKUP_ERRORS:
            return False if exists else None
        return True if exists else datum
    return get


_ORDERING = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_MIRROR = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _ordering(op: str, left: _Expr, right: _Expr) -> Fn:
    if left.const:
        op, left, right = _MIRROR[op], right, left
    compare, lf, rf = _ORDERING[op], left.fn, right.fn
    # The hot case, `field > 0.5`: the constant's kind is found once, not per record.
    const_kind = kind_of(right.value) if right.const else None

    def ordered(datum: Any) -> bool:
        a, b = lf(datum), rf(datum)
        kind = _kind_of_type(a.__class__) or kind_of(a)
        if kind not in _ORDERED or kind != (const_kind or kind_of(b)):
            return False
        try:
            return compare(a, b)
        except (TypeError, ArithmeticError):  # Decimal('NaN') and the like
            return False
    return ordered


def _equality(negate: bool, left: _Expr, right: _Expr) -> Fn:
    if left.const:
        left, right = right, left
    lf, rf = left.fn, right.fn
    if right.const and right.value is None:  # `x == null` is the one comparison with null
        return (lambda d: lf(d) is not None) if negate else (lambda d: lf(d) is None)
    return lambda datum: _equal(lf(datum), rf(datum)) != negate


def _membership(negate: bool, left: _Expr, right: _Expr) -> Fn:
    lf, rf = left.fn, right.fn
    if right.const and isinstance(right.value, list):
        items = right.value
        try:  # a watch list of a thousand objectIds is a set lookup, not a scan
            keys = {(kind_of(item), item) for item in items}
        except TypeError:  # a list in the list
            return lambda datum: _contains(lf(datum), items) != negate

        def member(datum: Any) -> bool:
            a = lf(datum)
            try:
                return ((kind_of(a), a) in keys) != negate
            except TypeError:  # a list or a record is never among hashable items
                return negate
        return member
    return lambda datum: _contains(lf(datum), rf(datum)) != negate


_ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul,
               "/": operator.truediv, "%": operator.mod}


def _arithmetic(op: str, left: _Expr, right: _Expr) -> Fn:
    compute, lf, rf = _ARITHMETIC[op], left.fn, right.fn

    def arithmetic(datum: Any) -> Any:
        a, b = lf(datum), rf(datum)
        kind = kind_of(a)
        if kind != kind_of(b):
            return None
        if kind == "number":
            try:
                return compute(a, b)
            except (ArithmeticError, TypeError):  # x/0, an int too big for a float, Decimal+float
                return None
        return a + b if op == "+" and kind == "string" else None
    return arithmetic


def _chain(tests: list[Callable[[Any], bool]], conjunction: bool) -> Fn:
    if len(tests) == 2:
        first, second = tests
        if conjunction:
            return lambda datum: first(datum) and second(datum)
        return lambda datum: first(datum) or second(datum)
    quantifier = all if conjunction else any
    return lambda datum: quantifier(test(datum) for test in tests)


def _of_kind(kind: str, fn: Callable[..., Any], otherwise: Any = None) -> Callable[..., Any]:
    return lambda *values: (fn(*values) if all(kind_of(v) == kind for v in values)
                            else otherwise)


# name -> (number of arguments, function of their values, whether it returns a boolean)
FUNCTIONS: dict[str, tuple[int, Callable[..., Any], bool]] = {
    "abs": (1, _of_kind("number", abs), False),
    "len": (1, lambda v: len(v) if kind_of(v) in ("string", "bytes", "list", "object") else None,
            False),
    "lower": (1, _of_kind("string", str.lower), False),
    "upper": (1, _of_kind("string", str.upper), False),
    "startswith": (2, _of_kind("string", str.startswith, False), True),
    "endswith": (2, _of_kind("string", str.endswith, False), True),
    "isnan": (1, lambda v: isinstance(v, float) and v != v, True),
    "exists": (1, lambda v: v, True),  # compiled from its path by _Parser.call instead
}

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[<>!()\[\],.+\-*/%])
""", re.VERBOSE | re.DOTALL)
_KEYWORDS = {"and", "or", "not", "in", "is", "null", "true", "false"}
_LITERALS = {"null": None, "true": True, "false": False}
_ALIASES = {"&&": "and", "||": "or", "!": "not"}
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r"}
# Binding powers, loosest first: or, and, not, comparisons, + -, * / %, unary minus.
_NOT_BP, _CMP_BP, _UNARY_BP = 3, 4, 7
_INFIX_BP = {"or": 1, "and": 2, "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4, "in": 4,
             "is": 4, "not": 4, "+": 5, "-": 5, "*": 6, "/": 6, "%": 6}


class _Token(NamedTuple):
    kind: str  # number, string, name, keyword, op, end
    value: Any
    column: int
    text: str

    def is_(self, *values: str) -> bool:
        return self.kind in ("op", "keyword") and self.value in values

    def __str__(self) -> str:
        return "end of expression" if self.kind == "end" else repr(self.text)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.depth, self.position = text, 0, 0
        self.tokens = self.tokenize()

    def error(self, column: int, what: str) -> UsageError:
        shown = re.sub(r"\s", " ", self.text)  # one line, same length: the column still holds
        if len(shown) > 80:
            start = max(0, min(column - 40, len(shown) - 76))
            end = start + 76
            shown = "..." * (start > 0) + shown[start:end] + "..." * (end < len(shown))
        return UsageError(f'column {column}: {what} in "{shown}"', where="--where")

    def tokenize(self) -> list[_Token]:
        tokens, position, text = [], 0, self.text
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None:
                char = text[position]
                what = "unterminated string" if char in "'\"" else f"unexpected {char!r}"
                raise self.error(position + 1, what + " (use '==')" * (char == "="))
            kind, word, column, position = match.lastgroup, match[0], position + 1, match.end()
            value: Any = word
            if kind == "space":
                continue
            if kind == "number":
                try:
                    value = float(word) if any(c in word for c in ".eE") else int(word)
                except ValueError:  # more digits than Python converts
                    raise self.error(column, "number too long") from None
            elif kind == "string":
                value = self.unescape(word[1:-1], column)
            elif kind == "name" and word.lower() in _KEYWORDS:
                kind, value = "keyword", word.lower()
            elif kind == "op":
                value = _ALIASES.get(word, word)
            tokens.append(_Token(kind or "", value, column, word))
        return [*tokens, _Token("end", None, len(text) + 1, "")]

    def unescape(self, body: str, column: int) -> str:
        def replace(match: re.Match[str]) -> str:
            code = match[1]
            if len(code) == 5:
                return chr(int(code[1:], 16))
            if code not in _ESCAPES:
                raise self.error(column + 1 + match.start(), f"unknown escape '\\{code}'")
            return _ESCAPES[code]
        return _ESCAPE.sub(replace, body)

    def peek(self) -> _Token:
        return self.tokens[self.position]

    def advance(self) -> _Token:
        self.position += 1
        return self.tokens[self.position - 1]

    def expect(self, value: str) -> None:
        token = self.advance()
        if not token.is_(value):
            raise self.error(token.column, f"expected '{value}' but found {token}")

    def node(self, token: _Token, fn: Fn, *parts: _Expr, boolean: bool = False) -> _Expr:
        if all(part.const for part in parts):  # fold constants once rather than per record
            return _const(fn(None))
        depth = 1 + max(part.depth for part in parts)
        if depth > MAX_DEPTH:
            raise self.error(token.column, _TOO_DEEP)
        return _Expr(fn, boolean, depth)

    def parse(self) -> _Expr:
        if self.peek().kind == "end":
            raise UsageError("empty expression", where="--where")
        tree, token = self.expression(0), self.peek()
        if token.kind != "end":
            raise self.error(token.column, f"unexpected {token}")
        return tree

    def expression(self, min_bp: int) -> _Expr:
        """Pratt parsing: operators binding tighter than ``min_bp`` join the left operand."""
        self.depth += 1
        if self.depth > MAX_DEPTH:  # parentheses and prefixes recurse: stop before Python does
            raise self.error(self.peek().column, _TOO_DEEP)
        left, compared = self.prefix(), False
        while True:
            token = self.peek()
            bp = _INFIX_BP.get(token.value) if token.kind in ("op", "keyword") else None
            if bp is None or bp <= min_bp:
                break
            self.advance()
            if bp == _CMP_BP:
                if compared:
                    raise self.error(token.column, "comparisons do not chain: join them with 'and'")
                left, compared = self.comparison(token, left), True
            elif token.value in ("and", "or"):
                # `a or b or c` is one node over three tests, so long chains stay shallow.
                parts = [left, self.expression(bp)]
                while self.peek().is_(token.value):
                    self.advance()
                    parts.append(self.expression(bp))
                tests = _chain([part.test() for part in parts], token.value == "and")
                left = self.node(token, tests, *parts, boolean=True)
            else:
                right = self.expression(bp)
                left = self.node(token, _arithmetic(token.value, left, right), left, right)
        self.depth -= 1
        return left

    def comparison(self, token: _Token, left: _Expr) -> _Expr:
        op, fn = token.value, left.fn
        if op == "is":
            negate = self.peek().is_("not")
            self.position += negate
            self.expect("null")
            test = (lambda d: fn(d) is not None) if negate else (lambda d: fn(d) is None)
            return self.node(token, test, left, boolean=True)
        if op == "not" and not self.advance().is_("in"):
            raise self.error(token.column, "unexpected 'not' (did you mean 'not in'?)")
        right = self.expression(_CMP_BP)
        if op in ("in", "not"):
            if right.const and not isinstance(right.value, list | str):
                raise self.error(token.column, "'in' needs a list, a string or a field after it")
            test = _membership(op == "not", left, right)
        elif op in ("==", "!="):
            test = _equality(op == "!=", left, right)
        else:
            test = _ordering(op, left, right)
        return self.node(token, test, left, right, boolean=True)

    def prefix(self) -> _Expr:
        token = self.advance()
        if token.kind in ("number", "string"):
            return _const(token.value)
        if token.kind == "keyword" and token.value in _LITERALS:
            return _const(_LITERALS[token.value])
        if token.is_("not"):
            test = (operand := self.expression(_NOT_BP)).test()
            return self.node(token, lambda d: not test(d), operand, boolean=True)
        if token.is_("-"):
            fn = (operand := self.expression(_UNARY_BP)).fn
            return self.node(token, lambda d: -v if kind_of(v := fn(d)) == "number" else None,
                             operand)
        if token.is_("("):
            inner = self.expression(0)
            self.expect(")")
            return inner
        if token.is_("["):
            items = self.sequence("]")
            fns = [item.fn for item in items]
            return self.node(token, lambda d: [fn(d) for fn in fns], *items)
        if token.kind == "name":
            return self.call(token) if self.peek().is_("(") else self.path(token)
        raise self.error(token.column, f"unexpected {token}")

    def sequence(self, closing: str) -> list[_Expr]:
        items: list[_Expr] = []
        while not self.peek().is_(closing):
            if items:
                self.expect(",")
            items.append(self.expression(0))
        self.advance()
        return items

    def path(self, token: _Token) -> _Expr:
        steps: list[str | int] = [token.value]
        while self.peek().is_(".", "["):
            if self.advance().is_("."):
                name = self.advance()
                if name.kind not in ("name", "keyword"):  # after a dot even `in` is a field
                    raise self.error(name.column, f"expected a field name but found {name}")
                steps.append(name.text)
                continue
            index, sign = self.advance(), 1
            if index.is_("-"):  # `[-1]`: the last element
                index, sign = self.advance(), -1
            if index.kind == "number" and isinstance(index.value, int):
                steps.append(sign * index.value)
            elif index.kind == "string" and sign == 1:  # `["odd key"]`
                steps.append(index.value)
            else:
                raise self.error(index.column, f"expected an index or a 'key' but found {index}")
            self.expect("]")
        return _Expr(_getter(tuple(steps)), path=tuple(steps))

    def call(self, token: _Token) -> _Expr:
        name = token.value
        if name not in FUNCTIONS:
            known = ", ".join(sorted(FUNCTIONS))
            raise self.error(token.column, f"unknown function '{name}' (known: {known})")
        arity, function, boolean = FUNCTIONS[name]
        self.advance()
        args = self.sequence(")")
        if len(args) != arity:
            raise self.error(token.column, f"{name}() takes {arity} argument"
                             f"{'s' * (arity > 1)}, got {len(args)}")
        if name == "exists":
            if args[0].path is None:
                raise self.error(token.column, "exists() takes a field path")
            return _Expr(_getter(args[0].path, exists=True), boolean=True)
        fns = [arg.fn for arg in args]
        if arity == 1:
            only = fns[0]
            return self.node(token, lambda d: function(only(d)), *args, boolean=boolean)
        return self.node(token, lambda d: function(*[fn(d) for fn in fns]), *args,
                         boolean=boolean)


def compile_where(text: str) -> Callable[[Any], bool]:
    """Compile a ``--where`` expression into a predicate over a datum (docs/filtering.md).

    Raises :class:`UsageError` naming the column of the first problem.
    """
    tree = _Parser(text).parse()
    if tree.const:
        verdict = _true(tree.value)
        return lambda datum: verdict
    return tree.test()
