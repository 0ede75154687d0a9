"""The calculator app: exact arithmetic on a small expression language, never ``eval``.

Grammar (lowest precedence first)::

    sum      := product (('+' | '-') product)*
    product  := unary (('*' | '/') unary)*
    unary    := ('+' | '-') unary | power
    power    := postfix (('^' | '**') unary)?          right-associative: 2^3^2 = 2^9
    postfix  := atom ('%' ('of' unary)?)*                15% = 0.15, 15% of 200 = 30
    atom     := NUMBER | NAME | NAME '(' [sum (',' sum)*] ')' | '(' sum ')'

So ``-2^2`` is -4 and ``2^-1`` is 0.5. The Unicode signs × · ÷ − – π are read as
* * / - - pi, and one trailing ``=`` is ignored. Names are pi, e and the functions sqrt, ln,
log (base 10, or ``log(x, base)``), exp, abs, round (``round(x, digits)``), min, max,
sum, mean (the arithmetic mean of its arguments), floor, ceil, sin, cos, tan (radians).
There is no implicit multiplication (write ``2*pi``) and no modulo: ``%`` always means percent.

Percent: ``p%`` is p/100 everywhere, except when the right operand of ``+`` or ``-`` is
just a percentage (``p%`` or ``(p%)``): then it is relative to the running total, as on a
pocket calculator, so ``200 + 10%`` = 220 and ``200 - 10%`` = 180 (but ``200 * 10%`` = 20,
``10% + 5`` = 5.1, ``200 + 10% of 50`` = 205).

Thousands separators: a comma is a separator when it follows 1-3 leading digits (or an
earlier group), is followed by exactly three digits and then a non-digit, and the number
is *not* directly inside a function call's parentheses. Inside ``max(...)`` every comma
separates arguments, so ``max(100,200)`` is 200 and ``max(1,234)`` is 234; wrap a grouped
number in its own parentheses there: ``sqrt((1,000,000))``.

Money as pages write it: a number may carry a currency mark before it (``$ € £ ¥`` or a code
``USD EUR GBP JPY CHF CAD AUD CNY INR``, with or without a space) and a scale after it: ``K``
(or ``k``), ``M``, ``B`` (or ``bn``), ``T`` written right after the digits, or ``thousand``,
``million``, ``billion``, ``trillion`` as a word. So ``$4.5B/$250M`` is 18 and ``mean(€2 million/€500
thousand, 3)`` is 3.5. A currency-marked number reads its thousands separators even inside a
function call (``mean(USD 2,000,000/USD 250,000, 4)`` is 6), since ``$1,234`` is never two
arguments. The currency is only checked, not kept: the result is a plain number, and an
expression that mixes two currencies is an error (there are no exchange rates here).

Exactness: numbers are ``fractions.Fraction``; + - * / and integer powers stay exact
(``0.1+0.2`` is 0.3, ``1/3*3`` is 1), as do rational roots that come out rational
(``sqrt(2.25)``, ``8^(1/3)``) and logs that are whole (``log(1000)``). Irrational results
(sqrt(2), ln, exp, trig, pi, e) are floats. ``round`` rounds half away from zero.

Output (``format_number``): integers of up to 30 digits in full, terminating decimals of
up to 15 places exactly, anything else rounded to 10 significant digits, in scientific
notation (``1.606938044e+60``) when the exponent is below -6 or above 9. The output
parses back as input.

Limits, checked before computing, never by catching RecursionError or MemoryError:
2,000 input characters; 60 levels of nesting (parentheses, signs and exponents, counted
by the parser); literal exponents within ±4,000; exact numerators and denominators of at
most 10,000 bits (about 3,000 digits). The size of an integer power is estimated before
it is computed; a larger exact result falls back to a float, and a float that overflows
or underflows to zero is an error. Every failure is a ``ToolError`` the model can act on.

Not covered: complex numbers, exchange rates, units other than money scales, variables, bitwise or
modulo operators.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction

from llmos_sandbox.amounts import CURRENCY, GROUPED_NUMBER, NUMBER, SCALE, SCALES  # money reads as in the sandbox
from llmos_tools import ToolError, hookimpl, tool

Value = Fraction | float

MAX_INPUT_CHARS = 2_000
MAX_DEPTH = 60  # nested parentheses, signs and exponents together
MAX_BITS = 10_000  # about 3,000 decimal digits in a numerator or denominator
MAX_LITERAL_EXPONENT = 4_000  # 1e4000 is already far past what a float can hold
MAX_ROUND_DIGITS = 100
SIGNIFICANT_DIGITS = 10  # for results that are not exact short decimals
PLAIN_INTEGER_DIGITS = 30  # longer integers are shown in scientific notation
PLAIN_DECIMAL_PLACES = 15  # longer terminating decimals are rounded like irrationals

UNICODE_SIGNS = str.maketrans(
    {"π": "pi", "×": "*", "·": "*", "÷": "/", "−": "-", "–": "-", "\u00a0": " ", "\u202f": " "}
)
NAME = re.compile(r"[A-Za-z_]\w*", re.ASCII)
OPERATOR = re.compile(r"\*\*|[-+*/^%(),]")
ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


@dataclass(frozen=True)
class _Token:
    kind: str  # "number", "name", "end", or the operator itself
    text: str
    position: int
    value: Value | None = None


def tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    parens: list[str] = []  # "call" or "group" for each open parenthesis
    currencies: dict[str, int] = {}  # each currency mark met, and where first
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        if currency := CURRENCY.match(text, i):
            currencies.setdefault(_currency(currency.group(1)), i)
            token = _money(text, currency.end(), i)  # "$1,234" is one number even inside f(...)
            i = token.position
            tokens.append(dataclasses.replace(token, position=currency.start()))
            continue
        grouping = not parens or parens[-1] == "group"  # inside f(...) commas separate arguments
        if match := (grouping and GROUPED_NUMBER.match(text, i)) or NUMBER.match(text, i):
            value, end = _scaled(text, match)
            tokens.append(_Token("number", text[i:end], i, value))
            i = end
            continue
        if match := NAME.match(text, i):
            tokens.append(_Token("name", match.group(), i))
        elif match := OPERATOR.match(text, i):
            if match.group() == "(":
                parens.append("call" if tokens and tokens[-1].kind == "name" else "group")
            elif match.group() == ")" and parens:
                parens.pop()
            tokens.append(_Token(match.group(), match.group(), i))
        else:
            raise ToolError(f"unexpected character {text[i]!r} at position {i}")
        i = match.end()
    if len(currencies) > 1:
        marks = " and ".join(currencies)
        raise ToolError(f"the expression mixes currencies ({marks}); convert to one currency first")
    tokens.append(_Token("end", "end of input", len(text)))
    return tokens


def _currency(mark: str) -> str:
    return {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY"}.get(mark, mark)


def _money(text: str, start: int, mark_at: int) -> _Token:
    """The number after a currency mark, with its scale; ``position`` is where the token ends."""
    match = GROUPED_NUMBER.match(text, start) or NUMBER.match(text, start)
    if not match:
        raise ToolError(f"the currency mark at position {mark_at} must be followed by a number")
    value, end = _scaled(text, match)
    return _Token("number", text[mark_at:end], end, value)


def _scaled(text: str, number: re.Match[str]) -> tuple[Value, int]:
    """A numeric literal's value times its scale (``4.5B``, ``2 million``), and where it ends."""
    value = _literal(number.group())
    scale = SCALE.match(text, number.end())
    if not scale:
        return value, number.end()
    return _fit(value * Fraction(10) ** SCALES[scale.group(1) or scale.group(2)]), scale.end()


def _literal(text: str) -> Value:
    """The exact value of a numeric literal such as ``1,234.5e-3``."""
    mantissa, _, exponent = text.replace(",", "").lower().partition("e")
    whole, _, fraction = mantissa.partition(".")
    scale = int(exponent or 0) - len(fraction)
    if abs(scale) > MAX_LITERAL_EXPONENT:  # checked before 10**scale is built
        raise ToolError(f"number {text!r} is out of range (exponent limit {MAX_LITERAL_EXPONENT})")
    return _fit(int(whole + fraction or "0") * Fraction(10) ** scale)


@dataclass(frozen=True)
class Number:
    value: Value


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Power:
    base: Node
    exponent: Node


@dataclass(frozen=True)
class Unary:
    op: str  # "-" negates, "%" divides by 100
    operand: Node


@dataclass(frozen=True)
class Chain:
    """A left-associative run like ``a + b - c``, kept flat so evaluating it needs no recursion."""

    first: Node
    rest: tuple[tuple[str, Node], ...]


Node = Number | _Call | Unary | Power | Chain


class Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        self.index += 1
        return self.tokens[self.index - 1]

    def expect(self, kind: str, message: str) -> None:
        if self.peek().kind != kind:
            raise ToolError(f"{message} at position {self.peek().position}")
        self.take()

    def parse(self) -> Node:
        node = self.sum()
        token = self.peek()
        if token.kind != "end":
            previous = self.tokens[self.index - 1]
            hint = "; '%' means percent here, and there is no modulo operator" if previous.kind == "%" else ""
            hint = hint or ("; write the operator, e.g. 2*pi" if token.kind in ("number", "name", "(") else "")
            raise ToolError(f"unexpected {token.text!r} at position {token.position}{hint}")
        return node

    def chain(self, operators: tuple[str, ...], operand: Callable[[], Node]) -> Node:
        first = operand()
        rest: list[tuple[str, Node]] = []
        while self.peek().kind in operators:
            rest.append((self.take().kind, operand()))
        return Chain(first, tuple(rest)) if rest else first

    def sum(self) -> Node:
        return self.chain(("+", "-"), self.product)

    def product(self) -> Node:
        return self.chain(("*", "/"), self.unary)

    def unary(self) -> Node:
        # Every way of nesting (parentheses, arguments, signs, exponents) passes here, so one counter bounds them all.
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise ToolError(f"expression is nested too deeply (limit {MAX_DEPTH} levels)")
            if self.peek().kind in ("+", "-"):
                sign = self.take().kind
                operand = self.unary()
                return Unary("-", operand) if sign == "-" else operand
            return self.power()
        finally:
            self.depth -= 1

    def power(self) -> Node:
        base = self.postfix()
        if self.peek().kind in ("^", "**"):
            self.take()
            return Power(base, self.unary())
        return base

    def postfix(self) -> Node:
        node = self.atom()
        while self.peek().kind == "%":
            self.take()
            node = Unary("%", node)
            if self.peek().kind == "name" and self.peek().text == "of":
                self.take()
                node = Chain(node, (("*", self.unary()),))
        return node

    def atom(self) -> Node:
        token = self.take()
        if token.kind == "number":
            assert token.value is not None
            return Number(token.value)
        if token.kind == "(":
            node = self.sum()
            self.expect(")", "missing ')'")
            return node
        if token.kind == "name":
            return self.call(token) if self.peek().kind == "(" else self.constant(token)
        if token.kind == "end":
            raise ToolError("expression ends unexpectedly" if self.index > 1 else "empty expression")
        raise ToolError(f"expected a number, name or '(' but found {token.text!r} at position {token.position}")

    def constant(self, token: _Token) -> Node:
        if token.text in CONSTANTS:
            return Number(CONSTANTS[token.text])
        if token.text in FUNCTIONS:
            raise ToolError(f"{token.text} is a function: write {token.text}(x)")
        raise ToolError(f"unknown name {token.text!r}; constants are {', '.join(CONSTANTS)}")

    def call(self, token: _Token) -> Node:
        if token.text not in FUNCTIONS:
            raise ToolError(f"unknown function {token.text!r}; functions are {', '.join(FUNCTIONS)}")
        self.take()  # "("
        args: list[Node] = []
        if self.peek().kind != ")":
            args.append(self.sum())
            while self.peek().kind == ",":
                self.take()
                args.append(self.sum())
        self.expect(")", f"missing ')' after the arguments of {token.text}")
        _, fewest, most = FUNCTIONS[token.text]
        if not fewest <= len(args) <= most:
            wanted = str(fewest) if fewest == most else f"{fewest} to {most}" if most < MANY else f"at least {fewest}"
            hint = " (inside a function call every comma separates arguments: write 1000000, not 1,000,000)"
            raise ToolError(f"{token.text} takes {wanted} argument(s), got {len(args)}" + (hint if args else ""))
        return _Call(token.text, tuple(args))


def _fit(value: Value) -> Value:
    """Keep exact values under MAX_BITS (else fall back to float); reject floats that left the real range."""
    if isinstance(value, Fraction):
        if max(value.numerator.bit_length(), value.denominator.bit_length()) <= MAX_BITS:
            return value
        return _fit_float(_float(value), nonzero=value != 0)
    return _fit_float(value, nonzero=False)


def _fit_float(value: float, nonzero: bool) -> float:
    if math.isnan(value):
        raise ToolError("result is not a real number")
    if math.isinf(value):
        raise ToolError("result is too large (beyond about 1e308)")
    if nonzero and value == 0:
        raise ToolError("result is too small to represent (below about 1e-308)")
    return value


def _float(value: Value) -> float:
    try:
        return float(value)
    except OverflowError:
        raise ToolError("result is too large (beyond about 1e308)") from None


def _arithmetic(op: str, left: Value, right: Value) -> Value:
    if op == "/" and right == 0:
        raise ToolError("division by zero")
    try:
        result = ARITHMETIC[op](left, right)
    except OverflowError:  # a float meeting an exact number too big for a float
        raise ToolError("result is too large (beyond about 1e308)") from None
    return _fit(result)


def _power(base: Value, exponent: Value) -> Value:
    if isinstance(base, Fraction) and isinstance(exponent, Fraction):
        if exponent.denominator == 1:
            return _integer_power(base, exponent.numerator)
        root = _exact_root(base, exponent.denominator)
        if root is not None:
            return _integer_power(root, exponent.numerator)
    return _float_power(base, exponent)


def _integer_power(base: Fraction, n: int) -> Value:
    if base == 0 and n < 0:
        raise ToolError("division by zero (0 to a negative power)")
    if base in (0, 1) or n == 0:
        return base**n
    if base == -1:
        return Fraction(1 if n % 2 == 0 else -1)
    if _power_bits(base, n) > MAX_BITS:  # checked first: 9**9**9**9 must not start a billion-digit multiplication
        return _float_power(base, Fraction(n))
    return _fit(base**n)


def _power_bits(base: Fraction, n: int) -> float:
    """About how many bits the numerator or denominator of ``base**n`` needs."""
    return abs(n) * max(math.log2(abs(base.numerator)), math.log2(base.denominator))


def _float_power(base: Value, exponent: Value) -> float:
    b, x = _float(base), _float(exponent)
    if b < 0 and not x.is_integer():
        raise ToolError("a negative number to a fractional power is not a real number")
    if b == 0 and x < 0:
        raise ToolError("division by zero (0 to a negative power)")
    try:
        return _fit_float(math.pow(b, x), nonzero=b != 0)
    except OverflowError:
        raise ToolError("result is too large (beyond about 1e308)") from None


def _exact_root(value: Fraction, degree: int) -> Fraction | None:
    """The rational ``degree``-th root of ``value`` if there is one (``(-8)^(1/3)`` is -2)."""
    if degree > 64 or (value < 0 and degree % 2 == 0):
        return None
    num, den = _integer_root(abs(value.numerator), degree), _integer_root(value.denominator, degree)
    if num is None or den is None:
        return None
    return Fraction(num if value >= 0 else -num, den)


def _integer_root(n: int, degree: int) -> int | None:
    if n < 2:
        return n
    root = 1 << -(-n.bit_length() // degree)  # an upper bound; Newton's method walks down from it
    while True:
        better = ((degree - 1) * root + n // root ** (degree - 1)) // degree
        if better >= root:
            return root if root**degree == n else None
        root = better


def _positive(name: str, x: Value) -> Value:
    if x <= 0:
        raise ToolError(f"{name} needs a positive number, got {format_number(x)}")
    return x


def _natural_log(x: Value) -> float:
    # Logs of the integer parts separately: math.log takes big ints, where float(x) could overflow.
    if isinstance(x, Fraction):
        return math.log(x.numerator) - math.log(x.denominator)
    return math.log(x)


def _ln(x: Value) -> Value:
    return Fraction(0) if _positive("ln", x) == 1 else _natural_log(x)


def _log(x: Value, base: Value = Fraction(10)) -> Value:
    _positive("log", x)
    if _positive("log base", base) == 1:
        raise ToolError("log base must not be 1")
    ratio = _natural_log(x) / _natural_log(base)
    if isinstance(x, Fraction) and isinstance(base, Fraction) and abs(ratio) < MAX_BITS:
        whole = round(ratio)  # log(1000) is exactly 3, not 2.9999999999999996
        if _power_bits(base, whole) <= MAX_BITS and base**whole == x:
            return Fraction(whole)
    return ratio


def _sqrt(x: Value) -> Value:
    if x < 0:
        raise ToolError(f"sqrt of a negative number ({format_number(x)}) is not a real number")
    return _power(x, Fraction(1, 2))


def _float_function(function: Callable[[float], float]) -> Callable[[Value], Value]:
    def apply(x: Value) -> Value:
        try:
            return _fit_float(function(_float(x)), nonzero=False)
        except (OverflowError, ValueError):
            raise ToolError(f"{function.__name__}({format_number(x)}) is out of range") from None

    return apply


def _round(x: Value, digits: Value = Fraction(0)) -> Value:
    if not (isinstance(digits, Fraction) and digits.denominator == 1 and abs(digits) <= MAX_ROUND_DIGITS):
        raise ToolError(f"round digits must be a whole number from -{MAX_ROUND_DIGITS} to {MAX_ROUND_DIGITS}")
    exact = x if isinstance(x, Fraction) else Fraction(repr(x))  # the float as shown, so round(2.675, 2) = 2.68
    scale = Fraction(10) ** int(digits)
    scaled = abs(exact) * scale
    rounded = math.floor(scaled + Fraction(1, 2))  # half away from zero, not Python's half to even
    return Fraction(rounded if exact >= 0 else -rounded) / scale


MANY = 99
FUNCTIONS: dict[str, tuple[Callable[..., Value], int, int]] = {
    "sqrt": (_sqrt, 1, 1),
    "ln": (_ln, 1, 1),
    "log": (_log, 1, 2),
    "exp": (lambda x: Fraction(1) if x == 0 else _float_function(math.exp)(x), 1, 1),
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "min": (lambda *xs: min(xs), 1, MANY),
    "max": (lambda *xs: max(xs), 1, MANY),
    "sum": (lambda *xs: sum(xs, Fraction(0)), 1, MANY),
    "mean": (lambda *xs: sum(xs, Fraction(0)) / len(xs), 1, MANY),
    "floor": (lambda x: Fraction(math.floor(x)), 1, 1),
    "ceil": (lambda x: Fraction(math.ceil(x)), 1, 1),
    "sin": (_float_function(math.sin), 1, 1),
    "cos": (_float_function(math.cos), 1, 1),
    "tan": (_float_function(math.tan), 1, 1),
}
CONSTANTS: dict[str, Value] = {"pi": math.pi, "e": math.e}


def _evaluate(node: Node) -> Value:
    match node:
        case Number(value):
            return value
        case Unary("-", operand):
            return -_evaluate(operand)
        case Unary("%", operand):
            return _arithmetic("/", _evaluate(operand), Fraction(100))
        case Power(base, exponent):
            return _power(_evaluate(base), _evaluate(exponent))
        case _Call(name, args):
            return _fit(FUNCTIONS[name][0](*(_evaluate(arg) for arg in args)))
        case Chain(first, rest):
            total = _evaluate(first)
            for op, operand in rest:
                value = _evaluate(operand)
                if (
                    op in "+-" and isinstance(operand, Unary) and operand.op == "%"
                ):  # 200 + 10% is 220: relative to the total so far
                    total = _arithmetic("*", total, _arithmetic(op, Fraction(1), value))
                else:
                    total = _arithmetic(op, total, value)
            return total
    raise AssertionError(f"unknown node {node!r}")


def evaluate(expression: str) -> Value:
    """The value of ``expression``: a Fraction when exact, a float otherwise. Raises ToolError."""
    text = expression.translate(UNICODE_SIGNS).strip().removesuffix("=").strip()
    if len(text) > MAX_INPUT_CHARS:
        raise ToolError(f"expression is too long ({len(text):,} characters; limit {MAX_INPUT_CHARS:,})")
    if not text:
        raise ToolError("empty expression")
    return _evaluate(Parser(tokenize(text)).parse())


def format_number(value: Value) -> str:
    """Integers plainly, short terminating decimals exactly, anything else to 10 significant digits."""
    if value == 0:
        return "0"
    if isinstance(value, Fraction):
        if value.denominator == 1 and abs(value.numerator) < 10**PLAIN_INTEGER_DIGITS:
            return str(value.numerator)
        places = next((k for k in range(PLAIN_DECIMAL_PLACES + 1) if 10**k % value.denominator == 0), None)
        if places is not None:  # a short terminating decimal: show it exactly
            scaled = abs(value.numerator) * 10**places // value.denominator
            if scaled < 10**PLAIN_INTEGER_DIGITS:
                digits = str(scaled).rjust(places + 1, "0")
                sign = "-" if value < 0 else ""
                return f"{sign}{digits[:-places]}.{digits[-places:]}"
    with localcontext() as context:
        context.prec = SIGNIFICANT_DIGITS
        if isinstance(value, Fraction):
            rounded = context.divide(Decimal(value.numerator), Decimal(value.denominator))
        else:
            rounded = context.plus(Decimal(value))
        rounded = rounded.normalize(context)
    if -7 < rounded.adjusted() < SIGNIFICANT_DIGITS:
        return format(rounded, "f")
    return format(rounded, "e")


@tool
def calculator(expression: str) -> str:
    """Evaluate arithmetic exactly: + - * / ^ %, sqrt, ln, log, exp, round, min, max, mean (15% of 1,200, $4.5B/$2M).

    Fractions stay exact (1/3*3 = 1); other results have 10 significant digits. Inside
    a function call commas separate arguments: write max(1000, 2500). The full grammar
    is in the module docstring. Money is read as written ($4.5B, €2 million,
    USD 2,000,000) and must be in one currency.

    Args:
        expression: the expression to evaluate, e.g. "400/1400" or "15% of 1,200 + sqrt(2)"
    """
    return format_number(evaluate(expression))


@hookimpl
def register_tools(register: Callable[..., None]) -> None:
    register(calculator)
