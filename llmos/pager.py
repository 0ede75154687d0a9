"""The pager: keeps the context (RAM) inside the window by paging tool results out to the store.

Every tool result becomes a document in the memory store (disk): big ones are cut into
pages and only the first page enters RAM, with a line that says how to read on. Before
each generation the kernel calls :meth:`Pager.fit`; when the rendered conversation plus
a reserve for generation would not fit, the oldest result turns are paged out: each one's
text is replaced by a one-line stub that names the page and how to bring it back
(``recall("…")`` or ``open_page(document=…, page=…)``).

KV-level paging: on a CPU that can edit its cache (:meth:`LlamaCPU.replace_span`), the
page's tokens are cut out of the KV cache, the suffix shifts left, and only the stub's
tokens are evaluated; nothing after the page is re-prefilled. Other CPUs fall back to
re-evaluating from the page on, and ``reprefilled_tokens`` shows the cost.

Eviction policy: least recently used results first (a result is used when it is added;
``recall``/``open_page`` bring a page back as a new result); when every older result is
already a stub, the oldest stubs are compacted to a bare ``[page P of document D, paged
out]`` so stubs cannot fill RAM themselves. Never evicted: the system prompt, user
turns, the model's own turns, and the newest result (the one being read).

Swap: when a page is paged out on such a CPU, its KV cells are saved (in memory, up to
``SAVED_KV_BYTES``); when the model brings that same page back (``open_page``/``recall``
returning exactly that page), it is rendered with its original text and its cells are put
back at the end of the cache (``restore_span``) instead of being evaluated. The cells were
computed under the prefix the page had then, so the restored page is exact when nothing
before it changed and an approximation otherwise, the same trade as shifting.

Not covered: evicting the model's own turns (a conversation of only chat can still fill
the window: the kernel then reports ``context_full``); saved KV states do not outlive the
process (the page text does, in the store).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llmos_memory import PageRef, Span, Store, recall_hint, stub_text
from llmos_tools import StoredPage

from llmos.cpu.base import CPU, ContextOverflow, Segment, TokenCPU
from llmos.dialects.base import Dialect, Turn
from llmos.events import Event, PageIn, PageOut


class Conversation(Protocol):
    """What the pager works on (the kernel is one): the turns, how they render, and the CPU."""

    turns: list[Turn]
    dialect: Dialect
    specs: list[dict[str, Any]]
    cpu: CPU


PAGE_TOKENS = 400
SAVED_KV_BYTES = 256 * 1024 * 1024  # saved page states kept for page-in, oldest dropped first


@dataclass(frozen=True)
class _SavedKV:
    data: bytes
    tokens: tuple[int, ...]
    start: int  # the position the span had when saved
    text: str  # the turn's text, so a page-in renders the same tokens
    source: str


@dataclass(frozen=True)
class RamSummary:
    window: int  # the model's context size
    reserve: int  # kept free for generation
    used: int  # tokens the rendered context takes now
    resident_pages: int
    paged_out: int

    @property
    def free(self) -> int:
        return max(0, self.window - self.reserve - self.used)

    def line(self) -> str:
        return (
            f"RAM {self.used}/{self.window - self.reserve} tokens ({self.free} free), "
            f"{self.resident_pages} pages resident, {self.paged_out} paged out"
        )


class Pager:
    def __init__(
        self,
        store: Store | str | Path,
        *,
        reserve: int = 256,
        page_tokens: int = PAGE_TOKENS,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        """``count_tokens`` should be the model's tokenizer, so pages are sized in its tokens."""
        if isinstance(store, Store):
            self.store = store
        else:
            options = {"count_tokens": count_tokens} if count_tokens else {}
            self.store = Store(store, page_tokens=page_tokens, **options)
        self.reserve = reserve
        self.page_tokens = page_tokens
        self.saved: dict[tuple[int, int], _SavedKV] = {}  # (document, page) -> its KV when paged out
        self.saved_budget = SAVED_KV_BYTES

    # ------------------------------------------------------------------ admitting results
    def admit(
        self, kernel: Conversation, text: str, *, source: str, trusted: bool, whole: str | None = None
    ) -> tuple[str, dict]:
        """Store a result as a document; return the text that enters RAM and the turn's page metadata.

        ``whole`` is the full document when the tool already returned a part of it (the
        browser returns its first page). A result bigger than two pages enters RAM as
        its first stored page plus a line saying how to read on.
        """
        document = self.store.add_text(whole or text, source or "tool", trust="trusted" if trusted else "untrusted")
        meta: dict[str, Any] = {"document": document.id, "page": 1, "title": document.title}
        if document.n_pages > 1 and self.store.count_tokens(text) > 2 * self.page_tokens:
            first = self.store.page(document.id, 1)
            note = (
                f"\n[page 1 of {document.n_pages} of document {document.id}; read on with "
                f"open_page(document={document.id}, page=2)]"
            )
            return first.text + note, meta
        return text, meta

    def page_in_events(self, pages: Sequence[StoredPage]) -> Iterator[Event]:
        """Page-in events for the stored pages a result brings back (``ToolResult.page_ins``)."""
        for page in pages:
            yield PageIn(f"{page.document}:{page.page}", page.n_tokens)

    # ------------------------------------------------------------------ eviction
    def fit(self, kernel: Conversation) -> Iterator[Event]:
        """Page out results until the rendered context plus the reserve fits the window."""
        limit = kernel.cpu.n_ctx - self.reserve
        yield from self._fit(kernel, limit)
        yield from self._restore(kernel)

    def _fit(self, kernel: Conversation, limit: int) -> Iterator[Event]:
        while True:
            segments = kernel.dialect.render(kernel.turns, kernel.specs)
            sizes = [_size(kernel.cpu, s) for s in segments]
            if _bos(kernel.cpu) + sum(sizes) <= limit:
                return
            victim = self._victim(kernel.turns)
            if victim is None:
                raise ContextOverflow(
                    f"the context needs {sum(sizes)} tokens and nothing more can be paged out of {limit}"
                )
            yield self._page_out(kernel, victim, segments, sizes)

    def _victim(self, turns: list[Turn]) -> Turn | None:
        """The oldest result still in full, else the oldest stub not yet compacted; never the newest result."""
        results = [t for t in turns if t.role == "result"][:-1]
        full = [t for t in results if "paged_out" not in t.meta]
        if full:
            return full[0]
        stubs = [t for t in results if not t.meta["paged_out"].get("compact")]
        return stubs[0] if stubs else None

    def _page_out(self, kernel: Conversation, turn: Turn, segments: list[Segment], sizes: list[int]) -> PageOut:
        if "document" not in turn.meta:  # a result admitted before the pager existed
            turn.meta.update(self.admit(kernel, turn.text, source=turn.source, trusted=turn.trusted)[1])
        key = f"t{turn.id}"
        index = next(i for i, s in enumerate(segments) if s.key == key)
        start = _bos(kernel.cpu) + sum(sizes[:index])
        end = start + sizes[index]
        ref = PageRef(
            turn.meta["document"], turn.meta.get("page", 1), turn.meta.get("title", turn.source), recall_hint(turn.text)
        )
        if "paged_out" in turn.meta:  # already a stub: compact it (stubs must not fill RAM themselves)
            stub = f"[page {ref.number} of document {ref.document_id}, paged out]"
            turn.meta["paged_out"]["compact"] = True
        else:
            stub = stub_text(Span(key, "page", start, end, page=ref))
            turn.meta["paged_out"] = {"tokens": end - start, "text": turn.text}
            self._save(kernel.cpu, turn, ref, start, end, segments[index])
        turn.text = stub
        new = next(s for s in kernel.dialect.render(kernel.turns, kernel.specs) if s.key == key)
        shifted = self._shift(kernel.cpu, start, end, segments[index], new)
        return PageOut(f"{ref.document_id}:{ref.number}", end - start, shifted, stub)

    def _shift(self, cpu: Any, start: int, end: int, old: Segment, new: Segment) -> bool:
        cpu.counters.context_tokens += _size(cpu, new)  # the stub is new context
        if not isinstance(cpu, TokenCPU):
            return False  # the next load re-evaluates from here, and counts it
        if list(cpu.tokens[start:end]) != list(cpu.segment_tokens(old)):
            return False  # the cache does not hold this rendering (e.g. not loaded yet)
        return bool(cpu.replace_span(start, end, cpu.segment_tokens(new)))

    # ------------------------------------------------------------------ swap: saved KV states
    def _save(self, cpu: Any, turn: Turn, ref: PageRef, start: int, end: int, segment: Segment) -> None:
        """Keep the page's KV cells, so bringing it back costs a copy instead of a prefill.

        Measured on the story model: restoring a 400-token page took 2.8 ms where
        re-evaluating it took 694 ms (benchmarks/memory.py, ``kv_restore_speedup``).
        """
        if turn.trusted or not isinstance(cpu, TokenCPU) or end > cpu.n_evaluated:
            return
        tokens = tuple(cpu.segment_tokens(segment))
        if tuple(cpu.tokens[start:end]) != tokens:
            return
        self.saved[(ref.document_id, ref.number)] = _SavedKV(
            cpu.save_span(start, end), tokens, start, turn.text, turn.source
        )
        while sum(len(s.data) for s in self.saved.values()) > self.saved_budget and len(self.saved) > 1:
            del self.saved[next(iter(self.saved))]

    def reusable_text(self, page: StoredPage, source: str) -> str | None:
        """The original text of a recalled page whose KV state is saved (so it renders the same tokens)."""
        saved = self.saved.get((page.document, page.page))
        return saved.text if saved is not None and saved.source == source else None

    def _restore(self, kernel: Conversation) -> Iterator[Event]:
        """Put a paged-in page's saved KV back instead of evaluating it (the newest turn asks for it)."""
        turn = kernel.turns[-1]
        key = (turn.meta.get("document"), turn.meta.get("page"))
        saved = self.saved.pop(key, None) if turn.meta.pop("restore", False) else None  # type: ignore[arg-type]
        cpu = kernel.cpu
        if saved is None or not isinstance(cpu, TokenCPU):
            return
        segments = kernel.dialect.render(kernel.turns, kernel.specs)
        index = next(i for i, s in enumerate(segments) if s.key == f"t{turn.id}")
        if tuple(cpu.segment_tokens(segments[index])) != saved.tokens:
            return  # rendered differently than when it was saved: evaluate it normally
        cpu.load(segments[:index])
        cpu.restore_span(saved.data, saved.tokens, saved.start)
        cpu.counters.restored_tokens += len(saved.tokens)
        yield from ()

    # ------------------------------------------------------------------ visibility
    def summary(self, kernel: Conversation) -> RamSummary:
        segments = kernel.dialect.render(kernel.turns, kernel.specs)
        used = _bos(kernel.cpu) + sum(_size(kernel.cpu, s) for s in segments)
        results = [t for t in kernel.turns if t.role == "result"]
        out = sum(1 for t in results if "paged_out" in t.meta)
        return RamSummary(kernel.cpu.n_ctx, self.reserve, used, len(results) - out, out)

    def close(self) -> None:
        self.store.close()


def _size(cpu: Any, segment: Segment) -> int:
    if segment.tokens is not None:
        return len(segment.tokens)
    if isinstance(cpu, TokenCPU):
        return len(cpu.segment_tokens(segment))
    return int(cpu.count_tokens(segment.text, segment.trusted))


def _bos(cpu: Any) -> int:
    return 1 if isinstance(cpu, TokenCPU) and cpu.add_bos and cpu.bos >= 0 else 0
