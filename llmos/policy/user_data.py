"""The user's own values: found in what the user typed, private, and looked for in every call.

What the user types is trusted for *control* (it may name tools, hosts, recipients), but
the *values* in it are private: "My account token is TOKEN-7731-QX" gives the model a
secret, not a destination. :mod:`llmos.policy.rules` lets a user value go only where the
user's words send it (a host or recipient the user named) once untrusted text is in the
context.

* :func:`user_values` (of a context), :func:`user_values_in` (of one turn): the values
  of the user's words that can carry a secret:

  - by shape: tokens of six characters or more (case, spaces and dashes ignored) that hold
    a digit: codes, tokens, passwords with digits, account numbers, IBANs, and groups of
    digits of eight or more in all (a card or phone number typed in groups);
  - by the words in front (:mod:`llmos.policy.secret_cues`): a value the user marks as
    secret with a cue ("my password is swordfish", "the passphrase: correct horse battery
    staple", "PIN: 4821", "api key is …", a quoted value after a cue), letters only
    included; four characters or more with a digit or in quotes, six for a bare word.

  URLs, e-mail addresses and host names are left out of the shape rule: they say *where*
  data goes (control), and a destination the user named is allowed anyway; so are dates
  and times (``2024-05-19``, ``10:30``, ``19/05/2024``): they say *when* (a meeting's start
  is sent to its participants), and a date is rarely a secret.
* :func:`carried`: which user values an argument carries, verbatim or through the encodings
  a compromised model reaches for first: percent-encoding (twice; ``+`` as a space),
  base64 (standard or URL-safe, any alignment), hex, the reversed string, ROT13, the value
  with separators between its characters (``t.o.k.e.n``, ``s/w/o/r/d``; spaces and dashes
  are ignored anyway) and simple leetspeak (``4 @ 3 1 ! | 0 5 $ 7`` read as ``a a e i i i
  o s s t``, ``l`` as ``i``; values of six characters or more). Case, spaces and dashes are
  ignored, so ``token 7731 qx`` is ``TOKEN-7731-QX``. A value of four or five characters (a
  PIN) is matched only as a whole word of a view (``4821`` is not in ``14821``), and not in
  leetspeak.

Not covered (the ``private_network`` rule of :mod:`llmos.policy.rules` asks about any link
the model composes to a host the user never named while user values are in the context,
which is the backstop for these): a value split into pieces shorter than six characters
(or split by anything but single separators between single characters), spelled out
("tango oscar kilo"), translated, encrypted, or encoded any other way (XOR, arithmetic, a
Caesar shift other than 13, two encodings in a row such as base64 of the reversed value);
a digit-free secret the user typed without a cue, or in a form
:mod:`llmos.policy.secret_cues` does not read ("I use marmalade as my password").
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from dataclasses import dataclass
from urllib.parse import unquote

from llmos.policy.provenance import DOMAIN_RE, EMAIL_RE, TOKEN_RE, URL_RE, Context, normalize
from llmos.policy.secret_cues import MIN_MARKED, cued_values

MIN_VALUE = 6  # normalized characters: shorter tokens ("13", "Q3") are too common to be secrets
# the shortest encodings of the shortest value (a four-character PIN): base64 without padding, hex
BASE64_RUN = re.compile(rf"[A-Za-z0-9+/_-]{{{-(-MIN_MARKED * 4 // 3)},}}")
HEX_RUN = re.compile(rf"(?:[0-9a-fA-F]{{2}}){{{MIN_MARKED},}}")
DIGIT_GROUPS = re.compile(r"\b\d{2,}(?:[ -]\d{2,})+\b")  # "4111 1111 1111 1111", "555 123 4567"
DATE_OR_TIME = re.compile(
    r"\d{4}-\d{1,2}-\d{1,2}(?:[T ]?\d{1,2}:\d{2}(?::\d{2})?)?|\d{1,2}[/.]\d{1,2}[/.]\d{2,4}|\d{1,2}:\d{2}(?::\d{2})?"
)
# four or more single characters with one to three separators between each: "t.o.k.e.n", "4 / 8 / 2 / 1"
SPACED = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9](?:[^A-Za-z0-9]{1,3}[A-Za-z0-9](?![A-Za-z0-9])){3,}")
NOT_ALNUM = re.compile(r"[^A-Za-z0-9]+")
WORD = re.compile(r"[a-z0-9]+")
LEET = str.maketrans("4@31!|l05$7", "aaeiiiiosst")


@dataclass(frozen=True)
class UserValue:
    """One value the user typed, and the user turn it came from."""

    text: str
    turn: int

    @property
    def key(self) -> str:
        return normalize(self.text)

    def masked(self) -> str:
        """How reasons show it: enough to recognize, not the whole secret (one character of a PIN)."""
        return f"{self.text[: min(3, len(self.text) // 4)]}…({len(self.text)} chars, user turn {self.turn})"


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
    addressless = EMAIL_RE.sub(" ", URL_RE.sub(" ", text))
    rest = DATE_OR_TIME.sub(" ", addressless)
    found: dict[str, UserValue] = {}
    groups = [g for g in DIGIT_GROUPS.findall(rest) if len(normalize(g)) >= 8]
    for token in [*groups, *TOKEN_RE.findall(rest)]:
        key = normalize(token)
        if len(key) < MIN_VALUE or not any(c.isdigit() for c in key):
            continue
        if not DOMAIN_RE.fullmatch(token):
            found.setdefault(key, UserValue(token, turn))
    for value in cued_values(addressless):  # the user said it is a secret: a host-like password counts too
        found.setdefault(normalize(value), UserValue(value, turn))
    return list(found.values())


def carried(value: str, values: list[UserValue]) -> list[tuple[UserValue, str]]:
    """The user values ``value`` carries, each with how: verbatim, url-encoded, reversed, spaced, rot13,
    leetspeak, base64 or hex."""
    if not values:
        return []
    views = _views(value)
    found = []
    for user_value in values:
        how = next((view.how for view in views if view.holds(user_value.key)), None)
        if how is not None:
            found.append((user_value, how))
    return found


class _View:
    """The argument under one decoding: normalized for long values, split into words for short ones.

    ``within_words``: the words are runs of single characters joined ("q=4.8.2.1" gives "q4821"),
    so a short value may be any part of one.
    """

    def __init__(self, how: str, text: str, *, leet: bool = False, within_words: bool = False) -> None:
        self.how, self.leet, self.within_words = how, leet, within_words
        self.normalized = normalize(text).translate(LEET) if leet else normalize(text)
        self.words = set() if leet else set(WORD.findall(text.lower()))

    def holds(self, key: str) -> bool:
        if len(key) < MIN_VALUE:  # a PIN: as a whole word only, never in leetspeak (too many near misses)
            return any(key in word for word in self.words) if self.within_words else key in self.words
        return (key.translate(LEET) if self.leet else key) in self.normalized


def _views(value: str) -> list[_View]:
    """The argument under each decoding tried."""
    once = unquote(value)
    decoded = unquote(once)
    plain = decoded.replace("+", " ")  # a form-encoded space
    views = [_View("verbatim", value), _View("url-encoded", plain), _View("reversed", plain[::-1])]
    joined = "|".join(NOT_ALNUM.sub("", run) for run in SPACED.findall(plain))  # runs stay apart
    views.append(_View("spaced", joined, within_words=True))
    views.append(_View("rot13", codecs.encode(plain, "rot13")))
    views.append(_View("leetspeak", plain, leet=True))
    views += [_View("base64", text) for text in _base64_decodings(decoded)]
    views += [_View("hex", text) for text in _hex_decodings(decoded)]
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
