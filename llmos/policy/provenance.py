"""Provenance: where each piece of context and each call argument came from.

The kernel's conversation (a list of :class:`~llmos.dialects.base.Turn`) is the only
record the policy trusts; nothing the model writes can change it. From it this module
derives:

* a :class:`Context`: the user's own words, trusted tool results, untrusted pages
  (web pages, files, tool output marked ``Trust.UNTRUSTED``) and *private* results;
* for each call argument, an :class:`ArgumentOrigin`: the labels of the text it
  was found in.

Labels (documented, conservative rules):

* **user**: the value (or an identifier inside it) appears verbatim in a user turn.
* **trusted:<source>**: it appears verbatim in a trusted tool result.
* **untrusted:<source>**: it appears verbatim in an untrusted page: *derived* from it.
* **private:<source>**: it appears verbatim in a private result. A result is
  private unless its source is a web address (``http(s)://…`` or ``search:…``):
  files, mail, memory, sandbox output and unknown sources are private.
* **tainted**: every argument the model writes after an untrusted page entered the
  context carries the page's taint, whether or not it is derived from it verbatim.
* **record:<source>**: the *whole* value (or an identifier in it) equals one of the
  *records* the tool declared for its result (``Turn.meta["records"]``): values a
  service keeps in structured fields (a sender, recipient or participant address, a
  counterparty IBAN, a channel or member name, an object id), as opposed to free
  text a third party wrote (a body, a description, a review, a web page). A record
  is matched as a whole value only, so an identifier written *inside* a record
  (an injected channel name full of instructions) is not vouched for by it.
* **delegated:<host>**: an e-mail address found on a web page from a host the user
  named, whose name part consists only of words the user wrote ("invite Dora; her
  address is on www.dora-website.com" -> ``dora@…`` from that page).
* hosts the user named in their own turns (URLs or bare domains) are **user-named**;
  a host matches a user-named host or any of its subdomains.
* **user values** (:func:`llmos.policy.user_data.user_values`): the values in the user's
  own turns that can carry a secret (tokens with a digit: codes, account numbers; values
  the user marks with a cue word: "my password is swordfish"; not dates or addresses).
  The user's words are trusted for control, but these values are private: the rules let
  them go only where the user's words send them.

Matching is on normalized identifiers: whole short values, URLs, e-mail addresses,
IBAN-like and other long alphanumeric tokens, and (for private data) lines of text
of 12 characters or more; case, spaces and dashes are ignored. Identifiers of six
characters or more are found anywhere in a text; shorter ones ("Fred", "13") only
as a whole token, so "13" is not found in "2024-05-13".

``user``, ``trusted:``, ``record:`` and ``delegated:`` labels *vouch* for a value;
``untrusted:`` without any of them means it was derived from an untrusted page.

Not covered: a value the model *transforms* (re-encodes, reverses, spells out)
is not recognized as derived; only the context-level ``tainted`` label and the
network rules in :mod:`llmos.policy.rules` catch that. Which tool produced a
result is read from ``Turn.meta["tool"]`` when the kernel records it, otherwise
from the call in the preceding assistant turn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from llmos.dialects.base import Turn

SHORT_VALUE = 80  # a whole argument this short is matched as one value
MIN_TOKEN = 6  # shorter identifiers ("Alice", "13") are too common to mean derivation
MIN_LINE = 12  # a line of private text this long, found in an argument, is a leak

URL_RE = re.compile(r"(?:https?://|www\.)[^\s\"'<>()\[\]{}]*[^\s\"'<>()\[\]{}.,;:!?]", re.IGNORECASE)
DOMAIN_RE = re.compile(r"\b(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}\b", re.IGNORECASE)
EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+-]*[A-Za-z0-9]")
CALL_NAME_RE = re.compile(r'"name"\s*:\s*"([^"]+)"')
WORD_RE = re.compile(r"[A-Za-z]{2,}")
WHOLE_TOKEN_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._:/@+-]*[A-Za-z0-9])?")
VOUCHING_PREFIXES = ("trusted:", "record:", "delegated:")  # and the label "user"


LINK_ARGUMENTS = frozenset({"url", "uri", "link", "href"})  # arguments that hold a link


def normalize(text: str) -> str:
    """Case, spaces and dashes do not make a value new."""
    return re.sub(r"[\s\-_]+", "", text).lower()


def is_public_source(source: str) -> bool:
    return source.startswith(("http://", "https://", "search:"))


@dataclass(frozen=True)
class Source:
    """One piece of context text: a user turn or a tool result."""

    kind: str  # user | trusted | untrusted
    name: str  # "user", the tool name, or the result's source (URL, path)
    turn: int
    text: str
    private: bool = False
    records: frozenset[str] = frozenset()  # normalized whole values the tool declared as records

    def label(self) -> str:
        return "user" if self.kind == "user" else f"{self.kind}:{self.name}"


@dataclass
class Context:
    """What is in the context window, by provenance."""

    sources: list[Source] = field(default_factory=list)
    user_hosts: set[str] = field(default_factory=set)

    @property
    def untrusted(self) -> list[Source]:
        return [s for s in self.sources if s.kind == "untrusted"]

    @property
    def private(self) -> list[Source]:
        return [s for s in self.sources if s.private]

    @property
    def user_words(self) -> set[str]:
        """The words of the user's own turns, lower-cased."""
        return {w.lower() for s in self.sources if s.kind == "user" for w in WORD_RE.findall(s.text)}

    def host_is_user_named(self, host: str) -> bool:
        host = host.lower().removeprefix("www.")
        return any(host == named or host.endswith("." + named) for named in self.user_hosts)

    def describe(self) -> str:
        """One line for the audit log."""
        untrusted = ", ".join(f"{s.name}@{s.turn}" for s in self.untrusted) or "none"
        private = ", ".join(f"{s.name}@{s.turn}" for s in self.private) or "none"
        hosts = ", ".join(sorted(self.user_hosts)) or "none"
        return f"context: untrusted pages [{untrusted}]; private results [{private}]; user-named hosts [{hosts}]"


def context_from(turns: Sequence[Turn], extra_hosts: Iterable[str] = ()) -> Context:
    """Label every user turn and tool result in the conversation."""
    context = Context(user_hosts={h.lower().removeprefix("www.") for h in extra_hosts})
    for index, turn in enumerate(turns):
        if turn.role == "user":
            context.sources.append(Source("user", "user", turn.id, turn.text))
            context.user_hosts |= hosts_in(turn.text)
        elif turn.role == "result":
            tool = str(turn.meta.get("tool") or _tool_of(turns, index))
            name = turn.source or tool
            private = not is_public_source(turn.source)
            kind = "trusted" if turn.trusted else "untrusted"
            records = frozenset(n for r in turn.meta.get("records") or () if (n := normalize(str(r))))
            context.sources.append(Source(kind, name, turn.id, turn.text, private, records))
    return context


def _tool_of(turns: Sequence[Turn], index: int) -> str:
    """The tool named in the assistant chunk before a result (fallback when meta lacks it)."""
    for turn in reversed(turns[:index]):
        if turn.role == "assistant":
            names = CALL_NAME_RE.findall(turn.text)
            return names[-1] if names else ""
    return ""


def hosts_in(text: str) -> set[str]:
    """Hosts named in text: those of URLs, e-mail domains, and bare domain names."""
    hosts = {h for url in URL_RE.findall(text) if (h := host_of(url))}
    hosts |= {m.group(0).lower().removeprefix("www.") for m in DOMAIN_RE.finditer(text)}
    return hosts


def host_of(url: str) -> str:
    """The host of a URL, with or without a scheme ("www.x.com/a" counts as a URL)."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        host = urlsplit(text).hostname or ""
    except ValueError:
        return ""
    return host.lower().removeprefix("www.")


def strings_in(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string inside an argument value, with its path (``recipients[0]``)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from strings_in(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for number, item in enumerate(value):
            yield from strings_in(item, f"{path}[{number}]")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield path, json.dumps(value)


def identifiers(text: str) -> set[str]:
    """The parts of a value that can carry a target or a secret, normalized."""
    decoded = unquote(text)
    found = {normalize(decoded)} if len(decoded.strip()) <= SHORT_VALUE else set()
    found |= {normalize(u) for u in URL_RE.findall(decoded)}
    found |= {normalize(e) for e in EMAIL_RE.findall(decoded)}
    found |= {normalize(t) for t in TOKEN_RE.findall(decoded) if _is_identifier(t)}
    return {f for f in found if len(f) >= MIN_TOKEN or (f == normalize(decoded) and f)}


def _is_identifier(token: str) -> bool:
    """Tokens with digits, or long ones: IBANs, codes, hostnames, passwords."""
    return len(token) >= MIN_TOKEN and (any(c.isdigit() for c in token) or "." in token or len(token) >= 10)


def lines_of(text: str) -> set[str]:
    return {n for line in re.split(r"[\n\r;]+|\.\s", text) if len(n := normalize(line)) >= MIN_LINE}


@dataclass
class ArgumentOrigin:
    """The labels of one argument string, and the hosts it addresses."""

    path: str
    value: str
    labels: dict[str, list[str]] = field(default_factory=dict)  # identifier -> labels of sources holding it
    leaked_lines: list[str] = field(default_factory=list)  # private sources whose lines appear in the value
    hosts: set[str] = field(default_factory=set)
    followed: set[str] = field(default_factory=set)  # identifiers of links copied whole from the context
    is_followed_link: bool = False  # the whole value is such a link

    def injected(self) -> list[str]:
        """Identifiers found in untrusted text and vouched for nowhere (user, trusted result, record)."""
        return [
            ident
            for ident, labels in self.labels.items()
            if any(label.startswith("untrusted:") for label in labels) and not vouched(labels)
        ]

    def named_by_user(self) -> bool:
        """The whole value is in the user's words, or a delegated lookup the user asked for found it."""
        labels = self.labels.get(normalize(unquote(self.value)), [])
        return any(label == "user" or label.startswith("delegated:") for label in labels)

    def unvouched(self) -> list[str]:
        """Identifiers found nowhere in the context: the model wrote them."""
        return [ident for ident, labels in self.labels.items() if not labels]

    @property
    def name(self) -> str:
        """The argument's own name: ``recipients[0]`` -> ``recipients``."""
        return self.path.split(".")[-1].split("[")[0].lower()

    def private_sources(self) -> list[str]:
        found = {
            label
            for ident, labels in self.labels.items()
            if not any(ident in link or link in ident for link in self.followed)
            for label in labels
            if label.startswith("private:")
        }
        return sorted(found | set(self.leaked_lines))

    def describe(self) -> str:
        shown = self.value if len(self.value) <= 60 else self.value[:57] + "..."
        parts = [f"{ident}<-{'+'.join(labels)}" for ident, labels in self.labels.items() if labels]
        return f"{self.path}={shown!r}: " + ("; ".join(parts) if parts else "model-written")


def origins(arguments: Mapping[str, Any], context: Context) -> list[ArgumentOrigin]:
    """Provenance of every string in the call's arguments."""
    texts = [(s, normalize(s.text), _tokens(s.text)) for s in context.sources]
    private_lines = {s.label(): lines_of(s.text) for s in context.private if len(s.text) >= MIN_LINE}
    result = []
    for path, value in strings_in(arguments):
        origin = ArgumentOrigin(path or "(value)", value, hosts={h for u in URL_RE.findall(value) if (h := host_of(u))})
        if path.split(".")[-1].split("[")[0].lower() in ("url", "uri", "link", "href", "host", "domain"):
            origin.hosts.add(host_of(value))
        for ident in identifiers(value):
            origin.labels[ident] = _labels(ident, texts)
        _vouch_records(origin, context)
        _vouch_delegated(origin, context)
        # a link copied whole from the context is followed, not filled in: it carries no private data
        followed = [u for u in URL_RE.findall(value) if any(normalize(u) in text for _, text, _ in texts)]
        origin.followed = {ident for u in followed for ident in identifiers(u)}
        origin.is_followed_link = normalize(value) in {normalize(u) for u in followed}
        normalized = normalize(value)
        for link in followed:
            normalized = normalized.replace(normalize(link), " ")
        origin.leaked_lines = sorted(
            label for label, lines in private_lines.items() if any(line in normalized for line in lines)
        )
        origin.hosts.discard("")
        result.append(origin)
    return result


def vouched(labels: Iterable[str]) -> bool:
    """The user, a trusted result, a record or a delegated lookup stands behind the value."""
    return any(label == "user" or label.startswith(VOUCHING_PREFIXES) for label in labels)


def _vouch(origin: ArgumentOrigin, ident: str, label: str) -> None:
    """``ident`` is vouched for by ``label``, and so is every identifier inside it."""
    for other, labels in origin.labels.items():
        if other in ident and label not in labels:
            labels.append(label)


def _vouch_records(origin: ArgumentOrigin, context: Context) -> None:
    """Whole values that equal a record the tool declared (never parts of a longer record)."""
    whole = normalize(unquote(origin.value))
    for source in context.sources:
        if not source.records:
            continue
        label = f"record:{source.name}"
        matched = list(origin.labels) if whole in source.records else [i for i in origin.labels if i in source.records]
        for ident in matched:
            _vouch(origin, ident, label)


def _vouch_delegated(origin: ArgumentOrigin, context: Context) -> None:
    """An address on a page the user pointed to, for someone the user named ("her e-mail is on her site")."""
    pages = [s for s in context.untrusted if is_public_source(s.name) and context.host_is_user_named(host_of(s.name))]
    if not pages:
        return
    words = context.user_words
    for address in EMAIL_RE.findall(origin.value):
        parts = WORD_RE.findall(address.split("@")[0].lower())
        if not parts or not all(part in words for part in parts):
            continue
        ident = normalize(address)
        for page in pages:
            if ident in normalize(page.text) and ident in origin.labels:
                _vouch(origin, ident, f"delegated:{host_of(page.name)}")


def _tokens(text: str) -> set[str]:
    return {normalize(t) for t in WHOLE_TOKEN_RE.findall(text)}


def _labels(ident: str, texts: list[tuple[Source, str, set[str]]]) -> list[str]:
    """Where ``ident`` occurs: anywhere in the text, or (short identifiers) as a whole token."""
    labels = []
    for source, text, tokens in texts:
        if (ident in tokens) if len(ident) < MIN_TOKEN else (ident in text):
            labels.append(source.label())
            if source.private and source.kind != "user":
                labels.append(f"private:{source.name}")
    return sorted(set(labels))
