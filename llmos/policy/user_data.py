"""The user's own values: found in what the user typed, private, and looked for in every call.

What the user types is trusted for *control* (it may name tools, hosts, recipients), but
the *values* in it are private: "My account token is TOKEN-7731-QX" gives the model a
secret, not a destination. :mod:`llmos.policy.rules` lets a user value go only where the
user's words send it (a host or recipient the user named) once untrusted text is in the
context.

* :func:`user_values` (of a context), :func:`user_values_in` (of one turn): the values
  of the user's words that can carry a secret: tokens of six characters or more (case,
  spaces and dashes ignored) that hold a digit: codes, tokens, passwords with digits,
  account numbers, IBANs, and groups of digits of eight or more in all (a card or phone
  number typed in groups). URLs, e-mail addresses and host names are left
  out: they say *where* data goes (control), and a destination the user named is allowed
  anyway; so are dates and times (``2024-05-19``, ``10:30``, ``19/05/2024``): they say
  *when* (a meeting's start is sent to its participants), and a date is rarely a secret.
* :func:`carried`: which user values an argument carries: verbatim, or through the
  encodings a compromised model reaches for first: percent-encoding (twice), base64
  (standard or URL-safe, any alignment), hex, and the reversed string. Case, spaces and
  dashes are ignored, so ``token 7731 qx`` is ``TOKEN-7731-QX``.

Not covered (the ``private_network`` rule of :mod:`llmos.policy.rules` asks about any link
the model composes to a host the user never named while user values are in the context,
which is the backstop for these): a value split into pieces shorter than six characters,
spelled out, translated, encrypted, or encoded any other way (ROT13, XOR, arithmetic);
words without digits ("my password is swordfish") are not recognized as values at all.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from urllib.parse import unquote

from llmos.policy.provenance import DOMAIN_RE, EMAIL_RE, TOKEN_RE, URL_RE, Context, normalize

MIN_VALUE = 6  # normalized characters: shorter tokens ("13", "Q3") are too common to be secrets
BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{8,}")
HEX_RUN = re.compile(r"(?:[0-9a-fA-F]{2}){6,}")
DIGIT_GROUPS = re.compile(r"\b\d{2,}(?:[ -]\d{2,})+\b")  # "4111 1111 1111 1111", "555 123 4567"
DATE_OR_TIME = re.compile(
    r"\d{4}-\d{1,2}-\d{1,2}(?:[T ]?\d{1,2}:\d{2}(?::\d{2})?)?|\d{1,2}[/.]\d{1,2}[/.]\d{2,4}|\d{1,2}:\d{2}(?::\d{2})?"
)


@dataclass(frozen=True)
class UserValue:
    """One value the user typed, and the user turn it came from."""

    text: str
    turn: int

    @property
    def key(self) -> str:
        return normalize(self.text)

    def masked(self) -> str:
        """How reasons show it: enough to recognize, not the whole secret."""
        return f"{self.text[:3]}…({len(self.text)} chars, user turn {self.turn})"


def user_values(context: Context) -> list[UserValue]:
    """The values of every user turn in the context that can carry a secret, first occurrence kept."""
    found: dict[str, UserValue] = {}
    for source in context.sources:
        if source.kind == "user":
            for value in user_values_in(source.text, source.turn):
                found.setdefault(value.key, value)
    return list(found.values())


def user_values_in(text: str, turn: int) -> list[UserValue]:
    """The values of one user turn that can carry a secret (see the module contract)."""
    rest = DATE_OR_TIME.sub(" ", EMAIL_RE.sub(" ", URL_RE.sub(" ", text)))
    found: dict[str, UserValue] = {}
    groups = [g for g in DIGIT_GROUPS.findall(rest) if len(normalize(g)) >= 8]
    for token in [*groups, *TOKEN_RE.findall(rest)]:
        key = normalize(token)
        if len(key) < MIN_VALUE or not any(c.isdigit() for c in key):
            continue
        if not DOMAIN_RE.fullmatch(token):
            found.setdefault(key, UserValue(token, turn))
    return list(found.values())


def carried(value: str, values: list[UserValue]) -> list[tuple[UserValue, str]]:
    """The user values ``value`` carries, each with how: verbatim, url-encoded, base64, hex or reversed."""
    if not values:
        return []
    views = _views(value)
    found = []
    for user_value in values:
        how = next((name for name, text in views if user_value.key in text), None)
        if how is not None:
            found.append((user_value, how))
    return found


def _views(value: str) -> list[tuple[str, str]]:
    """The argument as text, normalized, under each decoding tried."""
    once = unquote(value)
    decoded = unquote(once)
    views = [("verbatim", normalize(value)), ("url-encoded", normalize(decoded))]
    views.append(("reversed", normalize(decoded[::-1])))
    views += [("base64", normalize(text)) for text in _base64_decodings(decoded)]
    views += [("hex", normalize(text)) for text in _hex_decodings(decoded)]
    return views


def _base64_decodings(text: str) -> list[str]:
    """Every run of base64 characters (either alphabet) decoded at each of the four alignments."""
    decodings = []
    for run in BASE64_RUN.findall(text):
        standard = run.replace("-", "+").replace("_", "/")
        for start in range(4):
            chunk = standard[start:]
            chunk = chunk[:-1] if len(chunk) % 4 == 1 else chunk + "=" * (-len(chunk) % 4)  # padding stripped
            try:
                raw = base64.b64decode(chunk, validate=True)
            except (binascii.Error, ValueError):
                continue
            decodings.append(raw.decode("utf-8", "ignore"))
    return decodings


def _hex_decodings(text: str) -> list[str]:
    decodings = []
    for run in HEX_RUN.findall(text):
        for start in (0, 1):
            chunk = run[start:]
            decodings.append(bytes.fromhex(chunk[: len(chunk) - len(chunk) % 2]).decode("utf-8", "ignore"))
    return decodings
