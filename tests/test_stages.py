"""The filtering stages (kcp.stages): the --where language, --fields and --since/--until."""

from __future__ import annotations

import math
import operator
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kcp.errors import BadInput, UsageError
from kcp.message import Message
from kcp.stages import project_stage, time_window_stage, where_stage
from kcp.synth import iter_alerts
from kcp.times import parse_time
from kcp.where import MAX_DEPTH, compile_where

DATUM = {
    "objectId": "ZTF18abcdefg",
    "candidate": {"rb": 0.7, "magpsf": 18.5, "fid": 2, "isdiffpos": "t", "ssnamenr": None,
                  "flag": True, "nan": math.nan, "inf": math.inf},
    "prv_candidates": [{"jd": 1.5, "magpsf": None}, {"jd": 2.5, "magpsf": 19.25}],
    "tags": ["sn", "bright"],
    "map": {"a b": 1},
    "blob": b"\x01\x02",
    "count": 3,
}


def where(text: str, datum: Any = DATUM) -> bool:
    return compile_where(text)(datum)


# --- every operator, precedence, literals ----------------------------------------------------

@pytest.mark.parametrize("text", [
    # comparisons
    "candidate.rb > 0.5", "candidate.rb >= 0.7", "candidate.magpsf < 19", "count <= 3",
    "candidate.fid == 2", "candidate.fid != 1", "objectId == 'ZTF18abcdefg'",
    "objectId == \"ZTF18abcdefg\"", "objectId > 'ZTF17'", "blob == blob",
    "tags == ['sn', 'bright']",
    "0.5 < candidate.rb", "19 > candidate.magpsf",  # constants on the left
    "candidate.fid == 2.0", "candidate.flag == true", "candidate.flag != 1",  # bool is no number
    # membership
    "candidate.fid in [1, 2]", "candidate.fid not in [1, 3]", "'sn' in tags", "'x' not in tags",
    "'18abc' in objectId", "'a b' in map", "candidate.isdiffpos in ['t', '1']",
    "candidate.ssnamenr not in ['a']", "[1, 2] in [[1, 2], 3]",
    # null tests
    "candidate.ssnamenr is null", "candidate.nothing is null", "candidate.rb is not null",
    "candidate.ssnamenr == null", "candidate.rb != null", "null == null",
    # boolean operators and their aliases
    "candidate.rb > 0.5 and candidate.fid == 2", "candidate.rb > 0.9 or candidate.fid == 2",
    "not candidate.rb > 0.9", "candidate.rb > 0.5 && candidate.fid == 2",
    "candidate.rb > 0.9 || candidate.fid == 2", "!(candidate.rb > 0.9)", "NOT FALSE AND TRUE",
    # arithmetic
    "candidate.magpsf - 0.5 == 18", "candidate.magpsf + 1 == 19.5", "count * 2 == 6",
    "count / 2 == 1.5", "count % 2 == 1", "-count == -3", "- -count == 3",
    "objectId + '!' == 'ZTF18abcdefg!'", "1e-3 == 0.001", ".5 == 0.5", "2. == 2",
    "count / 0 is null", "count % 0 is null", "'a' * 2 is null", "-objectId is null",
    "candidate.flag + 1 is null",
    # paths
    "prv_candidates[0].jd == 1.5", "prv_candidates[-1].jd == 2.5", "prv_candidates[1]['jd'] == 2.5",
    "map['a b'] == 1", "prv_candidates[5].jd is null", "prv_candidates[-9].jd is null",
    "objectId.x is null", "tags.x is null", "count[0] is null",
    # functions
    "abs(-count) == 3", "abs(objectId) is null", "len(tags) == 2", "len(objectId) == 12",
    "len(map) == 1", "len(blob) == 2", "len(count) is null", "lower(objectId) == 'ztf18abcdefg'",
    "upper('abc') == 'ABC'", "startswith(objectId, 'ZTF18')", "endswith(objectId, 'efg')",
    "not startswith(count, 'Z')", "isnan(candidate.nan)", "not isnan(candidate.rb)",
    "exists(candidate.ssnamenr)", "not exists(candidate.nothing)", "exists(prv_candidates[1].jd)",
    "not exists(prv_candidates[2])",
    # strings
    "'it\\'s' == \"it's\"", r"'a\\b' == 'a' + '\\' + 'b'", r"'\u00e9' == 'é'",
    r"len('\n\t\r') == 3",
    # bare values are tested for truth: anything but null and false
    "objectId", "count", "0", "''", "candidate.flag", "true",
])
def test_true(text: str) -> None:
    assert where(text) is True


@pytest.mark.parametrize("text", [
    "candidate.rb > 0.7", "candidate.magpsf >= 19", "objectId == 'x'", "candidate.fid != 2",
    "candidate.fid in [1, 3]", "'x' in tags", "candidate.rb is null", "candidate.fid == '2'",
    "candidate.flag == 1", "objectId > 5", "objectId < 5", "tags < tags", "map > map",
    "candidate.nan == candidate.nan", "candidate.nan > 0", "candidate.nan < 0",
    "candidate.inf < 1e308", "startswith(objectId, 5)", "isnan(objectId)",
    "null", "false", "candidate.ssnamenr", "candidate.nothing", "exists(nothing.at.all)",
    "candidate.rb > 0.5 and candidate.fid == 1", "not (candidate.rb > 0.5)",
])
def test_false(text: str) -> None:
    assert where(text) is False


@pytest.mark.parametrize(("text", "expected"), [
    ("1 + 2 * 3 == 7", True),                 # * before +
    ("(1 + 2) * 3 == 9", True),
    ("10 - 4 - 3 == 3", True),                # left associative
    ("64 / 4 / 2 == 8", True),
    ("7 % 4 * 2 == 6", True),
    ("1 + 5 % 3 == 3", True),
    ("-2 * 3 == -6", True),
    ("-3 % 5 == 2", True),                    # unary minus binds tighter than %
    ("true or false and false", True),        # and before or
    ("(true or false) and false", False),
    ("not true or true", True),               # not before or
    ("not (true or true)", False),
    ("not false and false", False),           # not before and
    ("not 1 == 2", True),                     # comparison before not
    ("1 + 1 == 2 and 2 * 2 == 4", True),      # arithmetic before comparison before and
    ("1 < 2 == true", None),                  # comparisons do not chain
])
def test_precedence(text: str, expected: bool | None) -> None:
    if expected is None:
        with pytest.raises(UsageError, match="do not chain"):
            compile_where(text)
    else:
        assert where(text, {}) is expected


# --- null semantics ---------------------------------------------------------------------------

@pytest.mark.parametrize("datum", [{}, {"candidate": None}, {"candidate": {}},
                                   {"candidate": {"rb": None}}, {"candidate": []}, None, []])
def test_missing_or_null_field_is_null(datum: Any) -> None:
    assert where("candidate.rb is null", datum)
    assert not where("candidate.rb is not null", datum)
    assert where("candidate.rb == null", datum)
    for op in ("<", "<=", ">", ">="):  # ordering with null is false, whatever the side
        assert not where(f"candidate.rb {op} 0.5", datum)
        assert not where(f"0.5 {op} candidate.rb", datum)
        assert not where(f"candidate.rb {op} candidate.rb", datum)
    assert not where("candidate.rb == 0.5", datum)
    assert where("candidate.rb != 0.5", datum)  # != is always the negation of ==
    assert not where("candidate.rb in [0.5, 1]", datum)
    assert where("candidate.rb not in [0.5, 1]", datum)
    assert where("candidate.rb + 1 is null", datum)
    assert where("not candidate.rb > 0.5", datum)  # two-valued: not(false) is true
    assert not where("candidate.rb", datum)


def test_none_along_a_path_and_indexes() -> None:
    datum = {"a": [None, {"b": [1, 2]}]}
    assert where("a[0].b is null", datum)
    assert where("a[1].b[-1] == 2", datum)
    assert where("a[1].b[2] is null", datum)
    assert where("a.b is null", datum)  # a name into a list
    assert where("a[1][0] is null", datum)  # an index into a record


def test_attribute_names_are_dictionary_keys_only() -> None:
    # A path never reaches Python attributes: `__class__` is just a key no record has.
    assert where("objectId.__class__ is null")
    assert where("candidate.__class__.__name__ is null")
    assert where("__class__ is null", {"__class__": None})
    assert where("__dict__ == 1", {"__dict__": 1})


def test_keywords_are_field_names_after_a_dot() -> None:
    assert where("a.in == 1 and a.null == 2 and a.and is null", {"a": {"in": 1, "null": 2}})


def test_decimals_and_other_avro_logical_types() -> None:
    from decimal import Decimal

    datum = {"d": Decimal("1.5"), "t": time.gmtime(0), "nan": Decimal("NaN")}
    assert where("d > 1 and d < 2.0 and d == 1.5", datum)
    assert where("d + 1.5 is null and d + 1 == 2.5", datum)  # Decimal + float is no number
    assert not where("t > 1", datum)
    assert not where("nan > 1", datum)


def test_a_constant_expression_is_folded() -> None:
    assert compile_where("1 + 1 == 2")(None) is True
    assert compile_where("[1, 2] == [1, 2]")(None) is True


# --- the issue's acceptance check -------------------------------------------------------------

def test_acceptance_matches_the_same_filter_in_python() -> None:
    alerts = list(iter_alerts(300, seed=3))
    for number, alert in enumerate(alerts):  # some nulls, as real alerts have
        if number % 7 == 0:
            alert["candidate"]["rb"] = None
        if number % 11 == 0:
            del alert["candidate"]["magpsf"]
    predicate = compile_where("candidate.rb > 0.5 and candidate.magpsf < 19")

    def python(alert: dict[str, Any]) -> bool:
        rb, magpsf = alert["candidate"]["rb"], alert["candidate"].get("magpsf")
        return rb is not None and rb > 0.5 and magpsf is not None and magpsf < 19

    selected = [alert["candid"] for alert in alerts if predicate(alert)]
    assert selected == [alert["candid"] for alert in alerts if python(alert)]
    assert 20 < len(selected) < 280


def test_light_curve_filter_matches_python() -> None:
    text = ("prv_candidates[-1].magpsf is not null and "
            "candidate.magpsf < prv_candidates[-1].magpsf - 0.5 or len(prv_candidates) == 0")
    predicate = compile_where(text)
    for alert in iter_alerts(300, seed=4):
        history = alert["prv_candidates"]
        last = history[-1]["magpsf"] if history else None
        expected = ((last is not None and alert["candidate"]["magpsf"] < last - 0.5)
                    or not history)
        assert predicate(alert) is expected


def test_where_stage_drops_what_does_not_match() -> None:
    stage = where_stage("candidate.fid == 2")
    kept = Message(datum=DATUM)
    assert stage(kept) is kept
    assert stage(Message(datum={"candidate": {"fid": 1}})) is None
    assert stage(Message()) is None


# --- random expressions against a Python evaluation built alongside ---------------------------

FIELDS = ["a", "b", "c", "n.x", "missing"]
ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
              "%": operator.mod}
ORDERING = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
# Binding power of each node's operator: a child binding looser than its parent needs parentheses
LEVEL = {"or": 1, "and": 2, "not": 3, "cmp": 4, "null?": 4, "in": 4, "+": 5, "-": 5, "*": 6,
         "/": 6, "%": 6, "neg": 7, "abs": 8, "field": 8, "num": 8}


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def lookup(datum: dict[str, Any], path: str) -> Any:
    for step in path.split("."):
        if not isinstance(datum, dict):
            return None
        datum = datum.get(step)
    return datum


def python_function(tree: tuple) -> Callable[[dict[str, Any]], Any]:
    """The meaning of a tree, as docs/filtering.md states it, in plain Python."""
    kind = tree[0]
    if kind == "field":
        return lambda d: lookup(d, tree[1])
    if kind == "num":
        return lambda d: tree[1]
    if kind == "neg":
        operand = python_function(tree[1])
        return lambda d: -v if is_number(v := operand(d)) else None
    if kind == "abs":
        operand = python_function(tree[1])
        return lambda d: abs(v) if is_number(v := operand(d)) else None
    if kind in ARITHMETIC:
        left, right = python_function(tree[1]), python_function(tree[2])

        def arithmetic(d: dict[str, Any]) -> Any:
            a, b = left(d), right(d)
            if not (is_number(a) and is_number(b)):
                return None
            try:
                return ARITHMETIC[kind](a, b)
            except ZeroDivisionError:
                return None
        return arithmetic
    if kind == "cmp":
        op, left, right = tree[1], python_function(tree[2]), python_function(tree[3])

        def compare(d: dict[str, Any]) -> bool:
            a, b = left(d), right(d)
            if op in ("==", "!="):
                equal = a == b if a is not None and b is not None else a is b
                return equal == (op == "==")
            return a is not None and b is not None and ORDERING[op](a, b)
        return compare
    if kind == "null?":
        operand, negate = python_function(tree[1]), tree[2]
        return lambda d: (operand(d) is None) != negate
    if kind == "in":
        operand, items, negate = python_function(tree[1]), tree[2], tree[3]
        return lambda d: ((v := operand(d)) is not None and v in items) != negate
    if kind == "not":
        operand = python_function(tree[1])
        return lambda d: not operand(d)
    left, right = python_function(tree[1]), python_function(tree[2])
    if kind == "and":
        return lambda d: left(d) and right(d)
    return lambda d: left(d) or right(d)


def render(tree: tuple, minimal: bool) -> str:
    """The tree as --where text: fully parenthesised, or with only the parentheses that the
    documented precedence requires (which is how the precedence itself gets tested)."""
    kind = tree[0]

    def child(sub: tuple, right: bool = False) -> str:
        text = render(sub, minimal)
        looser = LEVEL[sub[0]] < LEVEL[kind] or (right and LEVEL[sub[0]] == LEVEL[kind])
        return f"({text})" if not minimal or looser else text

    if kind == "field":
        return tree[1]
    if kind == "num":
        return repr(tree[1]) if tree[1] >= 0 else f"({tree[1]!r})"
    if kind == "neg":
        return "-" + child(tree[1])
    if kind == "abs":
        return f"abs({render(tree[1], minimal)})"
    if kind == "cmp":
        return f"{child(tree[2])} {tree[1]} {child(tree[3], True)}"
    if kind == "null?":
        return f"{child(tree[1])} is {'not ' if tree[2] else ''}null"
    if kind == "in":
        return f"{child(tree[1])} {'not ' if tree[3] else ''}in {list(tree[2])!r}"
    if kind == "not":
        return "not " + child(tree[1])
    return f"{child(tree[1])} {kind} {child(tree[2], True)}"


numbers = st.one_of(st.integers(-3, 3), st.floats(-10, 10).map(lambda x: round(x, 2)))
# Mostly plain numbers, so that long arithmetic often has a value and precedence shows.
values = st.one_of(numbers, numbers, numbers, st.none(),
                   st.floats(allow_nan=True, allow_infinity=True))
leaves = st.one_of(st.sampled_from(FIELDS).map(lambda f: ("field", f)),
                   numbers.map(lambda v: ("num", v)))
terms = st.recursive(
    leaves,
    lambda sub: st.one_of(
        st.tuples(st.sampled_from(sorted(ARITHMETIC)), sub, sub),
        st.tuples(st.just("neg"), sub),
        st.tuples(st.just("abs"), sub),
    ),
    max_leaves=10,
)
predicates = st.recursive(
    st.one_of(
        st.tuples(st.just("cmp"), st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
                  terms, terms),
        st.tuples(st.just("null?"), terms, st.booleans()),
        st.tuples(st.just("in"), terms, st.lists(numbers, max_size=3).map(tuple), st.booleans()),
    ),
    lambda sub: st.one_of(
        st.tuples(st.just("not"), sub),
        st.tuples(st.sampled_from(["and", "or"]), sub, sub),
    ),
    max_leaves=6,
)
datums = st.fixed_dictionaries({
    "a": values, "b": values, "c": values,
    "n": st.one_of(st.fixed_dictionaries({"x": values}), st.none(), st.just({})),
})


@settings(max_examples=400, deadline=None)
@given(tree=predicates, data=st.lists(datums, min_size=1, max_size=5))
def test_random_expressions_match_python(tree: tuple, data: list[dict[str, Any]]) -> None:
    expected = python_function(tree)
    full, minimal = compile_where(render(tree, False)), compile_where(render(tree, True))
    for datum in data:
        assert full(datum) is bool(expected(datum)), render(tree, False)
        assert minimal(datum) is bool(expected(datum)), render(tree, True)


@settings(max_examples=1000, deadline=None)
@given(tree=terms, datum=st.fixed_dictionaries({  # no zeros: fewer nulls from x/0
    "a": st.integers(1, 9), "b": st.floats(0.5, 9), "c": st.integers(-9, -1),
    "n": st.fixed_dictionaries({"x": values})}))
def test_random_arithmetic_matches_python(tree: tuple, datum: dict[str, Any]) -> None:
    expected = python_function(tree)(datum)
    for minimal in (False, True):
        text = render(tree, minimal)
        if expected is None:
            check = f"({text}) is null"
        elif math.isnan(expected):
            check = f"isnan({text})"
        else:
            check, datum["expected"] = f"{text} == expected", expected
        assert compile_where(check)(datum), (check, expected)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
              st.binary(max_size=3)),
    lambda sub: st.one_of(st.lists(sub, max_size=3),
                          st.dictionaries(st.sampled_from(["a", "b", "x"]), sub, max_size=3)),
    max_leaves=10,
)
EXPRESSIONS = [
    "a > b", "a == b", "a in b", "a not in [1, 'x', [1], null]", "a + b > a * b", "a / b % 2 == 0",
    "len(a) > 1", "lower(a) == upper(b)", "startswith(a, b)", "a.x[0].b is null", "exists(a.x)",
    "-a < abs(b)", "a", "not a or b and x",
]


@settings(max_examples=300, deadline=None)
@given(datum=st.dictionaries(st.sampled_from(["a", "b", "x"]), json_values))
def test_evaluation_never_raises(datum: dict[str, Any]) -> None:
    for text in EXPRESSIONS:
        assert compile_where(text)(datum) in (True, False)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(
    ["a", ".", "b", "[", "]", "0", "-1", "(", ")", "'s'", '"', "'", "\\", " and ", " or ", "not ",
     "!", "==", "<", ">=", "=", "+", "*", "/", "%", ",", "in", "is", "null", "1.5e3", "len(",
     "exists(", "@", "é", "\n"]), max_size=20).map("".join))
def test_any_text_compiles_or_fails_as_usage_error(text: str) -> None:
    try:
        predicate = compile_where(text)
    except UsageError as error:
        assert "\n" not in str(error)
        assert str(error).startswith("--where: ")
    else:
        assert predicate(DATUM) in (True, False)


# --- hostile input ----------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "__import__('os').system('x')", "().__class__", "open('/etc/passwd')", "eval('1')",
    "exec('x')", "lambda: 1", "a if b else c", "1; import os", "a[0:1]", "f'{a}'", "`a`",
    "a.b()", "getattr(a, 'b')", r"'\x41'", "a = 1", "a === 1", "a <> 1", "[1, 2", "(a",
    "a.", "a..b", "a[", "a['x'", "a[x]", "a is", "a is 1", "a not", "a in 3", "len()",
    "len(a, b)", "exists(1)", "exists(a + 1)", "nosuch(a)", "", "   ", "and", "not", "a and",
    "1 2", "'unterminated", '"unterminated', "9" * 5000,
])
def test_hostile_or_broken_input_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        compile_where(text)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text", [
    "(" * 10_000 + "a" + ")" * 10_000, "not " * 10_000 + "a", "-" * 10_000 + "a",
    "[" * 10_000, "len(" * 10_000 + "a", "a + " * 10_000 + "a", "a * (" * 10_000 + "a",
    "!" * 100_000, "x." * 50_000 + "x == (",
])
def test_deep_nesting_fails_cleanly(text: str) -> None:
    with pytest.raises(UsageError):
        compile_where(text)


def test_nesting_up_to_the_limit_works_even_with_little_stack() -> None:
    depth = MAX_DEPTH - 2
    texts = ["(" * depth + "a > 1" + ")" * depth, "not " * depth + "a > 1",
             "-" * depth + "a == 2", "a" + " + a" * depth + " == 0"]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(500)  # parser and closures stay far below Python's default of 1000
    try:
        results = [compile_where(text)({"a": 2}) for text in texts]
    finally:
        sys.setrecursionlimit(limit)
    assert results == [True, True, True, False]


def test_long_flat_expressions_are_fine() -> None:
    text = " or ".join(f"a == {n}" for n in range(5000))
    assert compile_where(text)({"a": 4999}) is True
    names = ", ".join(f"'ZTF{n}'" for n in range(10_000))
    watch_list = compile_where(f"objectId in [{names}]")
    assert watch_list({"objectId": "ZTF9999"}) and not watch_list({"objectId": "ZTF10000"})


@pytest.mark.parametrize(("text", "message"), [
    ("candidate.rb > 0.5 )", "column 20: unexpected ')' in \"candidate.rb > 0.5 )\""),
    ("candidate.rb >", "column 15: unexpected end of expression"),
    ("a = 1", "column 3: unexpected '=' (use '==')"),
    ("a < b < c", "column 7: comparisons do not chain"),
    ("x and 'abc", "column 7: unterminated string"),
    ("'ab\\qc'", "column 4: unknown escape '\\q'"),
    ("foo(1)", "column 1: unknown function 'foo'"),
    ("a.b.c()", "column 6: unexpected '('"),
    ("a[x]", "column 3: expected an index or a 'key' but found 'x'"),
    ("len(a,\nb)", "column 1: len() takes 1 argument, got 2 in \"len(a, b)\""),
    ("(a or b", "column 8: expected ')' but found end of expression"),
    ("a is 5", "column 6: expected 'null' but found '5'"),
    ("a @ b", "column 3: unexpected '@'"),
])
def test_errors_name_the_column(text: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        compile_where(text)
    assert str(caught.value).startswith(f"--where: {message}")


def test_a_long_expression_is_shown_around_the_error() -> None:
    text = "a == 1 and " * 50 + "b == )"
    with pytest.raises(UsageError) as caught:
        compile_where(text)
    shown = str(caught.value)
    assert f"column {len(text)}:" in shown and "b == )" in shown and len(shown) < 200


# --- --fields ---------------------------------------------------------------------------------

ALERT = {"objectId": "ZTF1", "candid": 7, "candidate": {"ra": 1.0, "dec": 2.0, "rb": 0.3},
         "prv_candidates": [{"jd": 1.0, "magpsf": None}, {"jd": 2.0, "magpsf": 18.0}, None],
         "cutoutScience": None}


def project(spec: str, datum: Any = ALERT) -> Any:
    message = project_stage(spec)(Message(datum=datum, schema="the schema"))
    assert message is not None and message.schema is None
    return message.datum


def test_projection_keeps_nesting_in_the_record_order() -> None:
    result = project("candidate.ra, candidate.dec,objectId")
    assert result == {"objectId": "ZTF1", "candidate": {"ra": 1.0, "dec": 2.0}}
    assert list(result) == ["objectId", "candidate"]


def test_projection_details() -> None:
    assert project("nothing,candidate.nothing,objectId.x") == {"candidate": {}}
    assert project("candidate,candidate.ra") == {"candidate": ALERT["candidate"]}
    assert project("candidate.ra,candidate") == {"candidate": ALERT["candidate"]}
    assert project("prv_candidates.jd") == {"prv_candidates": [{"jd": 1.0}, {"jd": 2.0}, None]}
    assert project("cutoutScience,cutoutScience.stampData") == {"cutoutScience": None}
    assert project("cutoutScience.stampData") == {}
    assert ALERT["candidate"] == {"ra": 1.0, "dec": 2.0, "rb": 0.3}  # the input is untouched


@pytest.mark.parametrize("spec", ["", "a,", "a..b", ".a", "a, ,b"])
def test_bad_field_lists(spec: str) -> None:
    with pytest.raises(UsageError, match="--fields"):
        project_stage(spec)


def test_projection_needs_records() -> None:
    with pytest.raises(BadInput, match="records"):
        project_stage("a")(Message(datum=[1, 2]))


# --- --since / --until ------------------------------------------------------------------------

NOW = 1_532_491_200.0  # 2018-07-25T04:00:00Z


@pytest.mark.parametrize(("text", "expected"), [
    ("2018-07-25T04:00:00Z", 1_532_491_200_000),
    ("2018-07-25T04:00:00", 1_532_491_200_000),             # naive is UTC
    ("2018-07-25 04:00:00.250", 1_532_491_200_250),
    ("2018-07-25T06:00:00+02:00", 1_532_491_200_000),
    ("2018-07-25", 1_532_476_800_000),
    ("20180725T040000Z", 1_532_491_200_000),
    ("1532491200000", 1_532_491_200_000),                   # epoch milliseconds
    (" 1532491200000 ", 1_532_491_200_000),
    ("now", 1_532_491_200_000),
    ("-30s", 1_532_491_170_000), ("-10m", 1_532_490_600_000), ("-2h", 1_532_484_000_000),
    ("-3d", 1_532_232_000_000), ("-1w", 1_531_886_400_000), ("-1.5h", 1_532_485_800_000),
])
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "10m", "-10", "-10y", "2018-13-01",
                                  "1532491200000.5", "-1e3s", "٣٤"])
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="not a time"):
        parse_time(text, NOW)


def test_parse_time_defaults_to_the_clock() -> None:
    assert abs(parse_time("-1h") - (time.time() - 3600) * 1000) < 5000


def test_time_window() -> None:
    window = time_window_stage("2018-07-25T04:00:00Z", "-0s", now=NOW + 60)
    stamps = {1_532_491_199_999: False, 1_532_491_200_000: True, 1_532_491_259_999: True,
              1_532_491_260_000: False}
    for stamp, kept in stamps.items():
        assert (window(Message(timestamp=stamp)) is not None) is kept, stamp
    assert window(Message()) is not None  # no timestamp (a file): passes
    assert window(Message(timestamp=-1)) is not None  # Kafka's "not available"
    only_since = time_window_stage("-1h", None, now=NOW)
    assert only_since(Message(timestamp=int(NOW * 1000))) is not None
    assert only_since(Message(timestamp=int(NOW * 1000) - 3_600_001)) is None
    assert time_window_stage(None, None)(Message(timestamp=0)) is not None


def test_time_window_errors_name_the_option() -> None:
    with pytest.raises(UsageError, match=r"^--until: not a time: 'soon'"):
        time_window_stage("-1h", "soon")
    with pytest.raises(UsageError, match=r"^--since: not a time"):
        time_window_stage("x", None)
    with pytest.raises(UsageError, match="not before"):
        time_window_stage("-1h", "-2h")
