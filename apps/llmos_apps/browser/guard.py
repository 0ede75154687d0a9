"""The address guard: which URLs the browser may fetch, checked at every hop.

Contract
--------
* :meth:`Guard.check_url` vets a URL before each request and after each redirect:
  scheme (``http``/``https``; ``file`` only with ``allow_file``), the domain allow and
  deny lists, literal IP hosts and names that are private by definition.
* :class:`GuardedBackend` is the httpcore network backend the fetcher uses. It resolves
  the host itself, checks *every* DNS answer, and connects to the vetted address, so a
  name that resolves (or re-resolves, DNS rebinding) to a private address is refused
  at connect time. TLS still verifies the original host name.
* Blocked means: loopback, private (RFC 1918, ULA), link-local (cloud metadata lives at
  169.254.169.254), CGNAT, multicast, reserved and unspecified addresses. ``allow_private``
  lifts that; ``allow_hosts`` lifts it for exact ``host:port`` pairs (tests, a local SearXNG).
* :func:`clean_text` strips invisible characters (zero-width, bidi controls, Unicode tag
  characters used to smuggle hidden instructions) and says how many it removed.

Not covered: proxies (the fetcher ignores proxy environment variables, since a proxy
would hide the real peer address) and content-level checks (see ``fetch``).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

import httpcore
from llmos_errors import LlmosError

from llmos_apps.browser.config import BrowserSettings

BLOCKED_NAMES = ("localhost", "metadata.google.internal", "metadata", "instance-data")


class BlockedURL(LlmosError):
    """The guard refused a URL or an address; the message says why, for the model."""


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _domain_matches(host: str, domains: Iterable[str]) -> bool:
    return any(host == d or host.endswith("." + d) for d in domains)


class Guard:
    def __init__(self, settings: BrowserSettings, trusted_hosts: Iterable[str] = ()) -> None:
        self.settings = settings
        # host:port pairs the user configured (allow_hosts, search provider endpoints)
        self.exempt = {h.lower().replace("[", "").replace("]", "") for h in (*settings.allow_hosts, *trusted_hosts)}

    def is_exempt(self, host: str, port: int | None) -> bool:
        return self.settings.allow_private or f"{host.lower()}:{port}" in self.exempt

    def check_url(self, url: str) -> str:
        """Return the URL if it may be fetched; raise :class:`BlockedURL` otherwise."""
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  (raises ValueError for a port out of range)
        except ValueError as exc:
            raise BlockedURL(f"malformed URL {url!r}: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme == "file":
            if not self.settings.allow_file:
                raise BlockedURL(f"file:// URLs are not allowed ({url})")
            return url
        if scheme not in ("http", "https"):
            raise BlockedURL(f"only http and https URLs can be opened, not {scheme or 'a bare path'!r} ({url})")
        host = (parts.hostname or "").rstrip(".").lower()
        if not host:
            raise BlockedURL(f"URL has no host: {url}")
        if parts.username or parts.password:
            raise BlockedURL("URLs with credentials in them are not allowed")
        s = self.settings
        if s.deny_domains and _domain_matches(host, s.deny_domains):
            raise BlockedURL(f"domain {host} is on the deny list")
        if s.allow_domains and not _domain_matches(host, s.allow_domains):
            raise BlockedURL(f"domain {host} is not on the allow list")
        port = parts.port or (443 if scheme == "https" else 80)
        if self.is_exempt(host, port):
            return url
        if host in BLOCKED_NAMES or host.endswith((".localhost", ".internal", ".local")):
            raise BlockedURL(f"host {host} is a local or metadata name")
        try:
            literal = is_public_address(host)
        except ValueError:
            return url  # a name: its DNS answers are checked at connect time
        if not literal:
            raise BlockedURL(f"address {host} is loopback, private, link-local or reserved")
        return url

    def resolve(self, host: str, port: int) -> list[str]:
        """Addresses to connect to for ``host:port``, all vetted; raise if any is blocked."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not self.is_exempt(host, port):
            # refuse if *any* answer is private: a mixed answer is a rebinding trick
            bad = [a for a in addresses if not is_public_address(a)]
            if bad:
                raise BlockedURL(f"{host} resolves to a blocked address ({bad[0]})")
        return addresses


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore backend that connects only to addresses the guard vetted."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.inner = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):  # type: ignore[no-untyped-def]
        last: Exception | None = None
        for address in self.guard.resolve(host, port):
            try:
                return self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                last = exc
        raise last or httpcore.ConnectError(f"no address for {host}")

    def connect_unix_socket(self, path, timeout=None, socket_options=None):  # type: ignore[no-untyped-def]
        raise BlockedURL("unix sockets are not allowed")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


# zero-width and joiners, bidi embeddings/overrides/isolates, word joiner and invisible
# operators, BOM, soft hyphen, variation-selector supplement, and the tag block
# U+E0000..U+E007F that can spell hidden ASCII instructions
_INVISIBLE = re.compile(
    "[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\U000e0000-\U000e007f\U000e0100-\U000e01ef]"
)
_TAGS = re.compile("[\U000e0000-\U000e007f]")


def clean_text(text: str) -> tuple[str, str]:
    """(text without invisible characters, a note saying what was removed or "")."""
    if text.isascii():  # the common case, checked in C
        return text, ""
    found = _INVISIBLE.findall(text)
    if not found:
        return text, ""
    tags = sum(1 for ch in found if _TAGS.match(ch))
    note = f"{len(found)} invisible characters removed"
    if tags:
        note += f", {tags} of them Unicode tag characters (a known way to hide instructions)"
    return _INVISIBLE.sub("", text), note
