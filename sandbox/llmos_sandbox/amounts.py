"""Amounts of money as pages write them: ``$4.5B``, ``€2 million``, ``USD 2,000,000``.

Contract
--------
* The patterns here are the one grammar of written amounts in llmos: the calculator
  (:mod:`llmos_apps.calculator`) reads them inside expressions, and code in the python
  sandbox reads table cells with :func:`money`, so a figure means the same in both.
* A currency mark is ``$ € £ ¥`` or a code ``USD EUR GBP JPY CHF CAD AUD CNY INR`` (a space
  after it is allowed); a scale is ``K``/``k``, ``M``, ``B``/``bn``, ``T`` right after the
  digits or ``thousand``, ``million``, ``billion``, ``trillion`` as a word; thousands
  separators are groups of a comma and exactly three digits.
* :func:`money` returns the amount as a float in the text's own currency (there are no
  exchange rates), and NaN for text that is not an amount ("not disclosed", "n/a", "—",
  an empty cell), so ``table[column].map(money)`` leaves undisclosed figures missing, as
  pandas expects. A currency code may also follow the number (``2.5 million USD``).

Not covered: exchange rates, negative amounts in accounting brackets, other scale words
(lakh, crore), units other than money.

This module is imported inside the sandbox's kernel: it depends on the standard library only.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

__all__ = ["CURRENCY", "GROUPED_NUMBER", "NUMBER", "SCALE", "SCALES", "money"]

# ASCII digits only: "²" is a digit to Python's \d but not to int(). A grouped number needs 1-3 leading digits,
# then groups of a comma and exactly three digits, with no digit after the last group.
NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
GROUPED_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d*)?(?:[eE][+-]?\d+)?", re.ASCII)
CURRENCY = re.compile(r"([$€£¥]|(?:USD|EUR|GBP|JPY|CHF|CAD|AUD|CNY|INR)(?![A-Za-z_]))\s*")
# A scale right after the digits (4.5B), or a word after a space (4.5 billion); never the start of a longer name.
SCALE = re.compile(r"(?:(bn|[kKMBT])|\s*(thousand|million|billion|trillion))(?![A-Za-z_0-9])")
SCALES = {"k": 3, "K": 3, "M": 6, "B": 9, "bn": 9, "T": 12, "thousand": 3, "million": 6, "billion": 9, "trillion": 12}
_CODE_AFTER = re.compile(r"\s*(?:USD|EUR|GBP|JPY|CHF|CAD|AUD|CNY|INR)\s*$")


def money(text: object) -> float:
    """The amount ``text`` writes (``"$4.5B"`` -> 4.5e9, ``"€2 million"`` -> 2e6), or NaN if it is none."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    if not isinstance(text, str):
        return math.nan
    written = _CODE_AFTER.sub("", text.strip())
    sign = -1.0 if written.startswith(("-", "−")) else 1.0
    written = written.lstrip("-−+ ")
    if currency := CURRENCY.match(written):
        written = written[currency.end() :]
    number = GROUPED_NUMBER.match(written) or NUMBER.match(written)
    if not number:
        return math.nan
    value, end = Fraction(number.group().replace(",", "")), number.end()  # exact: 2.3 million is 2300000.0
    if scale := SCALE.match(written, end):
        value, end = value * 10 ** SCALES[scale.group(1) or scale.group(2)], scale.end()
    return sign * float(value) if not written[end:].strip() else math.nan
