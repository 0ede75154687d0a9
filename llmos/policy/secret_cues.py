"""Values the user marks as secret in words: "my password is swordfish", "PIN: 4821", "the passphrase: …".

:mod:`llmos.policy.user_data` finds values with a digit by their shape; a password made of
letters has no shape, so it is found by the words in front of it. :func:`cued_values`
returns the values of one user turn that follow a *cue*, in one of these *forms*:

* **cues** (any case, singular only): password, passwd, passphrase, pass phrase, passcode,
  PIN, PIN code, PIN number, token, OTP, client secret; ``<api|access|private|secret|license|
  licence|product|recovery|encryption> key``; ``<security|verification|confirmation|one-time|
  2FA|recovery|backup|unlock|door|alarm|access|secret> code``; ``<seed|recovery|secret> phrase``;
  ``<memorable|secret> word``; security answer. The cue may be qualified before the connector
  by ``for``/``on``/``at`` and one to three words ("my password for the bank is …").
  ``secret`` alone is a *weak* cue ("the secret is patience" is a saying): it counts only
  with ``:``/``=`` or a quoted value. Not cues: ``key`` and ``code`` alone ("the key is to
  relax", "the code is in main.py"), plurals ("passwords are …"), ``username``/``login``.
* **quoted**: the cue, then ``is``/``was``/``is now``/``:``/``=``/``to`` or nothing, then a
  value in quotes (``'…'``, ``"…"``, typographic quotes, backticks): the quoted text, spaces
  included ("use the password 'bluebird sunrise'", "change my password to "x y z"").
* **bare**: the cue, then ``is``/``was``/``is now`` (``:`` allowed after them) or ``:``/``=``,
  then one word (up to a space, quote, comma, semicolon, bracket or angle bracket), trailing
  punctuation dropped ("my password is swordfish-blue.").
* **before** the cue: ``use``/``using``/``used`` a value (bare or quoted) ``as`` my/the/our/a
  (optional one word, "wifi") cue ("I use marmalade as my password"), or a value then ``is``
  my/our/the cue ("bluebird42 is my PIN"); the same lengths and the same describing words
  apply ("this is my password" names no value).
* **phrase**: the phrase cues (passphrase, pass phrase, seed/recovery/secret phrase) with a
  bare connector take the words up to the end of the clause (``.``, ``,``, ``;``, ``!``,
  ``?``, a newline), at most 24 words ("the passphrase: correct horse battery staple.").

Minimum lengths (normalized: case, spaces and dashes ignored): a bare word of letters only, 6
characters (shorter ones, "wrong", "valid", "stuck", are what people say *about* a
password); anything with a digit, a quoted value and a phrase, 4 (a PIN). After ``is`` or
``was`` a bare word or the first word of a phrase in :data:`NOT_A_VALUE` (words that
describe a secret rather than being one: "incorrect", "missing", "in", "the" …) or a word of
letters ending in "ed" (the passive: "stored", "expired", "injected") is not a value: "my
password is incorrect", "the token is expired", "the passphrase is in my notes". A token of
thanks ("a token of thanks", "token gesture") has no connector, so it is never a value.

Not covered: a value before the cue in other words ("marmalade, that's my password"), a connector other
than those listed ("my password will be x", "set the PIN to 4821" without quotes), a bare
multi-word password (only the first word is taken) and a phrase run into the next clause
without punctuation ("…staple and summarise the page" takes "and summarise the page" too);
a password that is a word of :data:`NOT_A_VALUE` or ends in "ed" ("blessed") after
``is``/``was`` unless quoted or after ``:``; other languages. Text that looks like code
("token = f.encrypt(b'…')") gives what follows the ``=`` ("f.encrypt"): harmless unless the
call carries it, but a value all the same.
"""

from __future__ import annotations

import re

from llmos.policy.provenance import normalize

STRONG_CUES = (
    r"pass(?:word|wd|code)",
    r"pin(?:\s+code|\s+number)?",
    r"token",
    r"otp",
    r"client\s+secret",
    r"(?:api|access|private|secret|license|licence|product|recovery|encryption)[\s-]?key",
    r"(?:security|verification|confirmation|one[\s-]time|2fa|recovery|backup|unlock|door|alarm|access|secret)\s+code",
    r"(?:seed|recovery|secret|pass)\s*phrase",
    r"(?:memorable|secret)\s+word",
    r"security\s+answer",
)
CUE_RE = re.compile(rf"\b(?:(?P<strong>{'|'.join(STRONG_CUES)})|(?P<weak>secret))\b", re.IGNORECASE)
PHRASE_CUE = re.compile(r"phrase$", re.IGNORECASE)
QUALIFIER = r"(?:['’]s)?(?:\s+(?:for|on|at)(?:\s+[\w'’.-]+){1,3}?)?"
IS = r"\s+(?:is|was)(?:\s+now)?\s*:?\s*"
SIGN = r"\s*[:=]\s*"
QUOTED = r"[\"'“‘`](?P<value>[^\"'”’`\n]{1,100})[\"'”’`]"
BARE = r"(?P<value>[^\s\"'“”‘’`,;()<>]+)"
PHRASE = r"(?P<value>[^.,;!?\n\"“”]+)"
# (cue strength, value form) -> what may follow the cue; the first that matches wins
AFTER = {
    ("strong", "quoted"): re.compile(rf"{QUALIFIER}(?:{IS}|{SIGN}|\s+(?:to\s+)?){QUOTED}", re.IGNORECASE),
    ("weak", "quoted"): re.compile(rf"(?:{IS}|{SIGN}|\s+(?:to\s+)?){QUOTED}", re.IGNORECASE),
    ("strong", "phrase"): re.compile(rf"{QUALIFIER}(?P<is>{IS})?(?(is)|{SIGN}){PHRASE}", re.IGNORECASE),
    ("strong", "bare"): re.compile(rf"{QUALIFIER}(?P<is>{IS})?(?(is)|{SIGN}){BARE}", re.IGNORECASE),
    ("weak", "bare"): re.compile(rf"{SIGN}{BARE}", re.IGNORECASE),
}
CUES = "|".join(STRONG_CUES)
_BEFORE_VALUE = QUOTED.replace("?P<value>", "?P<quoted>") + "|" + BARE.replace("?P<value>", "?P<bare>")
BEFORE = (  # a value, then the cue: "I use marmalade as my password", "bluebird42 is my PIN"
    re.compile(
        rf"\b(?:use|uses|using|used)\s+(?:{_BEFORE_VALUE})\s+as\s+(?:my|the|our|a)\s+(?:\w+\s+)?(?:{CUES})\b",
        re.IGNORECASE,
    ),
    re.compile(rf"(?:(?<=\s)|^)(?:{_BEFORE_VALUE})\s+is\s+(?:my|our|the)\s+(?:\w+\s+)?(?:{CUES})\b", re.IGNORECASE),
)
MIN_WORD = 6  # a bare word of letters: shorter ones ("wrong", "valid") describe a password
MIN_MARKED = 4  # a value with a digit (a PIN), quoted or a phrase
MAX_PHRASE_WORDS = 24  # a seed phrase; more is a sentence
TRAILING = ".!?:)]}"

# Words that, after "is"/"was", say something *about* the secret: they are not the secret.
NOT_A_VALUE = frozenset(
    """
    a an the my our your his her their its this that it in on at to for of with from by and or but not no
    now still also just too very so same here there below above inside somewhere elsewhere
    incorrect correct invalid valid expired expiring missing required needed optional stored saved written
    changed updated reset broken secure insecure attached enclosed hidden forgotten compromised leaked stolen
    unknown visible revoked disabled enabled working listed included mentioned provided encrypted protected
    different similar identical exactly actually probably definitely something nothing anything another
    printed located shared private public longer shorter strong stronger weak weaker simple complex
    complicated available unavailable accepted rejected blocked locked unlocked active inactive pending
    already always usually currently generated random unique blank empty wrong right case-sensitive labelled
    labeled displayed shown emailed texted underneath beneath temporary permanent obvious difficult easy
    being what where which because about
    """.split()  # noqa: SIM905 (a word list reads better as text)
)


def cued_values(text: str) -> list[str]:
    """The values ``text`` marks as secret with a cue word, in order (see the module contract)."""
    found = [(cue.start(), _value_after(text, cue)) for cue in CUE_RE.finditer(text)]
    found += [(m.start(), _value_before(m)) for pattern in BEFORE for m in pattern.finditer(text)]
    values: list[str] = []
    for _, value in sorted(found, key=lambda item: item[0]):
        if value and value not in values:
            values.append(value)
    return values


def _value_before(found: re.Match[str]) -> str | None:
    if found.group("quoted"):
        return _accepted(found.group("quoted"), "quoted", described=False)
    return _accepted(found.group("bare"), "bare", described=True)  # "this is my password": no value


def _value_after(text: str, cue: re.Match[str]) -> str | None:
    strength = "strong" if cue.group("strong") else "weak"
    forms = ["quoted", "phrase" if PHRASE_CUE.search(cue.group(0)) else "bare"]
    for form in forms:
        after = AFTER.get((strength, form))
        found = after.match(text, cue.end()) if after else None
        if found:
            described = bool(found.groupdict().get("is"))  # "is"/"was": the word may describe it instead
            return _accepted(found.group("value"), form, described)
    return None


def _accepted(value: str, form: str, described: bool) -> str | None:
    """The value, cleaned, if long enough and (after "is") not a word that describes a secret."""
    if form == "quoted":
        return value if len(normalize(value)) >= MIN_MARKED else None
    value = " ".join(value.split()).strip(TRAILING).lstrip("([{")
    words = value.split()
    if not words or (described and _describes(words[0])):
        return None
    if form == "phrase":
        return value if len(words) <= MAX_PHRASE_WORDS and len(normalize(value)) >= MIN_MARKED else None
    key = normalize(value)
    if not any(c.isalnum() for c in key):
        return None
    return value if len(key) >= (MIN_MARKED if any(c.isdigit() for c in key) else MIN_WORD) else None


def _describes(word: str) -> bool:
    """After "is"/"was": a word that says something about the secret ("expired", "injected", "in")."""
    word = word.lower().strip(TRAILING)
    return word in NOT_A_VALUE or (word.isalpha() and word.endswith("ed"))  # passive: "is stored", "is hashed"
