"""The calculator app: grammar, exactness, output format, limits, and the tool as the kernel loads it."""

from __future__ import annotations

import math
import time
from fractions import Fraction

import pytest
from llmos_apps.calculator import MAX_DEPTH, evaluate, format_number
from llmos_sandbox.amounts import money
from llmos_tools import READ_ONLY, ToolError, load_tools


def calc(expression: str) -> str:
    return format_number(evaluate(expression))


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # precedence and associativity
        ("1 + 2 * 3", "7"),
        ("(1 + 2) * 3", "9"),
        ("10 - 4 - 3", "3"),
        ("2 / 4 / 2", "0.25"),
        ("2^3^2", "512"),
        ("2**3**2", "512"),
        ("-2^2", "-4"),
        ("(-2)^2", "4"),
        ("2^-1", "0.5"),
        ("--3", "3"),
        ("+3", "3"),
        # Unicode signs and a trailing "="
        ("7 × 6", "42"),
        ("7 ÷ 2", "3.5"),
        ("5 − 8", "-3"),
        ("2+2=", "4"),
        # literals
        ("1.5e9", "1500000000"),
        ("2.5E-3", "0.0025"),
        (".5", "0.5"),
        # percent
        ("15%", "0.15"),
        ("15% of 200", "30"),
        ("10% of 2^3", "0.8"),
        ("50% of 50% of 200", "50"),
        ("200 + 10%", "220"),
        ("200 - 10%", "180"),
        ("200 * 10%", "20"),
        ("10% + 5", "5.1"),
        ("200 + 10% of 50", "205"),
        # functions and constants
        ("sqrt(16)", "4"),
        ("sqrt(2.25)", "1.5"),
        ("sqrt(2)", "1.414213562"),
        ("8^(1/3)", "2"),
        ("(-8)^(1/3)", "-2"),
        ("log(1000)", "3"),
        ("log(0.001)", "-3"),
        ("log(8, 2)", "3"),
        ("log(2)", "0.3010299957"),
        ("ln(1)", "0"),
        ("ln(e)", "1"),
        ("exp(0)", "1"),
        ("exp(1)", "2.718281828"),
        ("abs(-3.5)", "3.5"),
        ("round(2.5)", "3"),
        ("round(-2.5)", "-3"),
        ("round(pi, 2)", "3.14"),
        ("round(2.675, 2)", "2.68"),
        ("round(1234, -2)", "1200"),
        ("floor(-2.5)", "-3"),
        ("ceil(2.1)", "3"),
        ("min(3, 1, 2)", "1"),
        ("max(3, 1, 2)", "3"),
        ("pi", "3.141592654"),
        ("cos(0)", "1"),
    ],
)
def test_expressions(expression: str, expected: str) -> None:
    assert calc(expression) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1,234,567 + 1", "1234568"),
        ("1,234.5", "1234.5"),
        ("(1,000) * 2", "2000"),
        ("sqrt((1,000,000))", "1000"),
        # inside a call's own parentheses every comma separates arguments, with or without a space
        ("max(1, 2)", "2"),
        ("max(1,2)", "2"),
        ("max(100,200)", "200"),
        ("sum(1, 2, 3.5)", "6.5"),
        ("mean(1e9/100e6, 3.5e9/155e6)", "16.29032258"),
        ("mean(1/3, 2/3)", "0.5"),
        ("max(1,234)", "234"),
        ("max(1234,5678)", "5678"),
        ("round(2.5,1)", "2.5"),
        ("max((1,000), 999)", "1000"),
    ],
)
def test_thousands_separators(expression: str, expected: str) -> None:
    assert calc(expression) == expected


@pytest.mark.parametrize("expression", ["1,23", "1234,567", "1,2345", "1,234,56", "1, 234"])
def test_malformed_groups_are_errors(expression: str) -> None:
    with pytest.raises(ToolError, match="unexpected ','"):
        evaluate(expression)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("$4.5B/$250M", "18"),  # figures copied from a funding table
        ("mean($2B/$100M, $4.5B/$235M)", "19.57446809"),
        ("mean(€2 million/€500 thousand, 3)", "3.5"),
        ("mean(USD 2,000,000/USD 250,000, 4)", "6"),  # a currency mark keeps its separators inside a call
        ("USD2,000/USD1,000", "2"),
        ("£1.5bn - £500M", "1000000000"),
        ("5k + 2", "5002"),
        ("2 billion + 1", "2000000001"),
        ("¥3T/¥1.5T", "2"),
        ("10% of $2M", "200000"),
        ("-$5M", "-5000000"),
    ],
)
def test_money_as_pages_write_it(expression: str, expected: str) -> None:
    assert calc(expression) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("$2M/€1M", "mixes currencies"),
        ("mean(USD 2M/EUR 1M)", "mixes currencies"),
        ("$", "must be followed by a number"),
        ("$ + 2", "must be followed by a number"),
        ("2Bx", "unexpected 'Bx'"),  # a scale is never the start of a longer name
        ("2 M", "unexpected 'M'"),  # a one-letter scale goes right after the digits
    ],
)
def test_money_errors(expression: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        evaluate(expression)


def test_grouped_number_inside_a_call_explains_the_comma_rule() -> None:
    with pytest.raises(ToolError, match="every comma separates arguments"):
        evaluate("sqrt(1,000,000)")


def test_rational_arithmetic_is_exact() -> None:
    assert evaluate("1/3*3") == 1
    assert evaluate("0.1 + 0.2") == Fraction(3, 10)
    assert evaluate("(2/3)^20") == Fraction(2, 3) ** 20
    assert evaluate("1.07^-3") == Fraction(100, 107) ** 3
    assert evaluate("10^3000 / 10^2999") == 10
    assert isinstance(evaluate("400/1400"), Fraction)
    assert isinstance(evaluate("sqrt(2)"), float)
    assert isinstance(evaluate("2 * pi"), float)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Fraction(400, 1400), "0.2857142857"),
        (Fraction(1, 3), "0.3333333333"),
        (Fraction(-5, 2), "-2.5"),
        (Fraction(1, 1024), "0.0009765625"),
        (Fraction(2**64), "18446744073709551616"),
        (Fraction(2**200), "1.606938044e+60"),
        (Fraction(1, 2**20), "9.536743164e-7"),
        (Fraction(10) ** 400, "1e+400"),
        (Fraction(73 * 10**8, 3), "2433333333"),
        (2.0, "2"),
        (-0.0, "0"),
        (1e-20, "1e-20"),
        (123456.789, "123456.789"),
    ],
)
def test_format_number(value: Fraction | float, expected: str) -> None:
    assert format_number(value) == expected


def test_output_reads_back_as_input() -> None:
    for expression in ["2^200", "1/2^20", "1/7", "0.5^2000"]:
        shown = calc(expression)
        assert calc(shown) == shown


def test_huge_exact_powers_fall_back_to_float() -> None:
    assert calc("1.0001^100000") == "22015.45605"
    assert calc("0.5^2000") == "8.709809816e-603"  # still exact: far below what a float can hold


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("9**9**9**9", "too large"),
        ("10**10**10", "too large"),
        ("2^9000 * 2^9000", "too large"),
        ("exp(1000)", "out of range"),
        ("e^710", "too large"),
        ("2^-100000", "too small"),
        ("1e999999999", "out of range"),
        ("1" * 10_000, "too long"),
        ("(" * 10_000 + "1" + ")" * 10_000, "too long"),
        ("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1), "nested too deeply"),
        ("-" * 1000 + "1", "nested too deeply"),
        ("2^" * 100 + "2", "nested too deeply"),
        ("__import__('os')", "unexpected character"),
        ("().__class__", "unexpected character"),
        (")", "expected a number"),
        ("1/0", "division by zero"),
        ("0^-1", "division by zero"),
        ("sqrt(-1)", "not a real number"),
        ("(-2)^0.5", "not a real number"),
        ("log(0)", "positive"),
        ("ln(-1)", "positive"),
        ("log(10, 1)", "base must not be 1"),
        ("foo + 1", "unknown name 'foo'"),
        ("foo(1)", "unknown function 'foo'"),
        ("sqrt", "is a function"),
        ("pi(2)", "unknown function 'pi'"),
        ("max()", "at least 1"),
        ("round(2, 0.5)", "round digits"),
        ("2 +", "ends unexpectedly"),
        ("(1 + 2", "missing '\\)'"),
        ("1 2", "unexpected '2'"),
        ("2pi", "write the operator"),
        ("10 % 3", "no modulo"),
        ("1²", "unexpected character"),
    ],
)
def test_errors_are_clear_and_quick(expression: str, message: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ToolError, match=message):
        evaluate(expression)
    assert time.perf_counter() - started < 10  # a hang guard, not a speed claim (speed lives in benchmarks)


def test_long_flat_expressions_need_no_recursion() -> None:
    assert calc("+".join(["1"] * 900)) == "900"
    assert calc("9" * 1999).startswith("1e+1999")


def test_tool_through_the_entry_point() -> None:
    registry = load_tools(allow={"calculator"})
    assert registry.problems == []
    calculator = registry["calculator"]
    assert calculator.effects == READ_ONLY
    assert "%" in calculator.description
    assert calculator.parameters["required"] == ["expression"]
    assert "description" in calculator.parameters["properties"]["expression"]
    assert calculator.run({"expression": "400/1400"}).text == "0.2857142857"
    with pytest.raises(ToolError, match="division by zero"):
        calculator.run({"expression": "1/0"})
    with pytest.raises(ToolError, match="missing required"):
        calculator.run({})


@pytest.mark.parametrize(
    "written", ["$4.5B", "€2 million", "USD 2,000,000", "£750K", "¥3T", "$1,234.5", "2.3 million", "-$5M", "EUR 330M"]
)
def test_the_sandboxs_money_reads_amounts_as_the_calculator_does(written: str) -> None:
    assert money(written) == float(evaluate(written))


@pytest.mark.parametrize("cell", ["not disclosed", "undisclosed", "n/a", "—", "", "5 apples", "$", None, "12 bn"])
def test_money_is_nan_for_cells_that_are_not_amounts(cell: object) -> None:
    assert math.isnan(money(cell))


def test_money_takes_a_trailing_currency_code_and_numbers_as_they_are() -> None:
    assert money("2.5 million USD") == 2_500_000.0
    assert money(7) == 7.0 and money(2.5) == 2.5
