"""The pager: keeps the context (RAM) inside the window by paging tool results out to the store.

One memory manager over three parts it is given: the CPU (whose KV cache it edits), the
store (disk: documents, pages and saved KV states) and a page table (the eviction policy,
:class:`llmos_memory.PageTable`, pure bookkeeping). It never holds the kernel and never
changes a turn: it says what to change and the kernel does it.

Each step, the kernel renders once and asks :meth:`Pager.plan`: the page table is loaded
with the rendered context and, when it plus a reserve for generation does not fit the
window, says which results to evict. Each :class:`Eviction` names a result turn and its
one-line stub (``recall("…")`` / ``open_page(document=…, page=…)``); the kernel applies
them to its turns (:meth:`Eviction.apply`), renders again and hands both renderings to
:meth:`Pager.page_out`, which edits the KV cache to match and yields :class:`PageOut`.

* Results become documents (:meth:`Pager.admit`): big ones are cut into pages and only the
  first page enters RAM, with a line that says how to read on.
* Eviction policy (the page table's): least recently used results first (a result is
  used when it is added; a page brought back is a new result), then stubs beyond a fifth
  of RAM, oldest first, are compacted to a bare ``[page P of document D, paged out]``.
  Never evicted: the system prompt, user turns, the model's own turns, the newest result.
* KV-level paging: on a CPU that can edit its cache (``TokenCPU.replace_span``), the page's
  tokens are cut out, the suffix shifts left and only the stub's tokens are evaluated.
  Other CPUs re-evaluate from the page on, and ``reprefilled_tokens`` shows the cost.
* Swap: a page's KV cells are saved in the store when it is paged out (``Store.save_kv``,
  at most ``SAVED_KV_BYTES`` per model, oldest dropped). When the newest turn brings that
  page back rendered exactly as it was (:meth:`Pager.swapped_text` gives the text), its
  cells are put back at the end of the cache instead of being evaluated
  (:meth:`Pager.swap_in`). The cells were computed under the prefix the page had then: exact
  when nothing before it changed, an approximation otherwise, the same trade as shifting.

Not covered: evicting the model's own turns (a conversation of only chat can still fill
the window: the kernel then reports ``context_full``); swap of trusted results (they are
small and the kernel's own); sharing saved states between models (keyed by ``cpu.name``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos_memory import KVState, PageRef, PageTable, RamFull, RamSummary, Span, Store, recall_hint, stub_text
from llmos_tools import StoredPage

from llmos.cpu.base import CPU, ContextOverflow, Segment, TokenCPU
from llmos.dialects.base import Turn
from llmos.events import Event, PageIn, PageOut

PAGE_TOKENS = 400
SAVED_KV_BYTES = 256 * 1024 * 1024  # saved page states kept per model for page-in, oldest dropped first


@dataclass(frozen=True)
class Eviction:
    """One result turn to stub, as the page table chose it; the kernel applies it to its turn."""

    turn_id: int
    key: str  # the turn's segment key
    start: int  # where the turn's segment sits in the context
    end: int
    stub: str
    compact: bool  # a bare stub: a stub made smaller, or a result whose stub would crowd RAM
    whole: bool  # the result was in RAM in full until now (its KV cells are worth saving)
    ref: PageRef  # the stored page the result holds
    page: dict[str, Any]  # document/page/title of a result admitted before the pager existed

    def apply(self, turn: Turn) -> None:
        """Put the stub in the turn's place, keeping the text it had (a page-in may render it again)."""
        if turn.id != self.turn_id:
            raise ValueError(f"eviction of turn {self.turn_id} applied to turn {turn.id}")
        turn.meta.update(self.page)
        if "paged_out" not in turn.meta:
            turn.meta["paged_out"] = {"tokens": self.end - self.start, "text": turn.text}
        if self.compact:
            turn.meta["paged_out"]["compact"] = True
        turn.text = self.stub


class Pager:
    def __init__(
        self,
        cpu: CPU,
        store: Store | str | Path,
        *,
        reserve: int = 256,
        page_tokens: int = PAGE_TOKENS,
    ) -> None:
        """Pages are sized in the CPU's tokens (``cpu.count_tokens``)."""
        self.cpu = cpu
        if isinstance(store, Store):
            self.store = store
        else:
            self.store = Store(store, page_tokens=page_tokens, count_tokens=cpu.count_tokens)
        self.reserve = reserve
        self.page_tokens = page_tokens
        self.table = PageTable(
            context_size=max(cpu.n_ctx, reserve + 1), reserve=reserve, count_tokens=_stub_counter(cpu)
        )
        self.saved_budget = SAVED_KV_BYTES

    # ------------------------------------------------------------------ admitting results
    def admit(self, text: str, *, source: str, trusted: bool, whole: str | None = None) -> tuple[str, dict]:
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
    def plan(self, turns: Sequence[Turn], segments: Sequence[Segment]) -> list[Eviction]:
        """What to evict so ``segments`` (the turns rendered) plus the reserve fit; [] when they fit.

        Raises :class:`ContextOverflow` when nothing more can be evicted.
        """
        sizes = [_size(self.cpu, s) for s in segments]
        offset = _bos(self.cpu, segments)
        self.table.context_size = max(self.cpu.n_ctx - offset, self.reserve + 1)
        self.table.load(self._spans(turns, segments, sizes))
        try:
            plan = self.table.plan_admit(0)
        except RamFull:
            raise ContextOverflow(
                f"the context needs {offset + self.table.used} tokens and nothing more can be paged out of "
                f"{self.cpu.n_ctx - self.reserve}"
            ) from None
        by_key = {f"t{t.id}": t for t in turns}
        return [self._eviction(by_key[e.key], e.start + offset, e.end + offset, not e.stub) for e in plan.evictions]

    def _spans(self, turns: Sequence[Turn], segments: Sequence[Segment], sizes: list[int]) -> Iterator[Span]:
        results = {f"t{t.id}": t for t in turns if t.role == "result"}
        newest = f"t{turns[-1].id}" if turns and turns[-1].role == "result" else None
        for segment, size in zip(segments, sizes, strict=True):
            turn = results.get(segment.key)
            if turn is None or segment.key == newest or turn.meta.get("paged_out", {}).get("compact"):
                yield Span(segment.key, "stub" if turn else "markup", 0, size, pinned=True)
            elif "paged_out" in turn.meta:
                yield Span(segment.key, "stub", 0, size, last_use=turn.id, page=_ref(turn))
            else:
                yield Span(segment.key, "page", 0, size, last_use=turn.id, page=_ref(turn))

    def _eviction(self, turn: Turn, start: int, end: int, compact: bool) -> Eviction:
        page: dict[str, Any] = {}
        if "document" not in turn.meta:  # a result admitted before the pager existed: store it now
            page = self.admit(turn.text, source=turn.source, trusted=turn.trusted)[1]
        ref = _ref(turn, page)
        key = f"t{turn.id}"
        whole = "paged_out" not in turn.meta
        if compact or not whole:  # stubs must not fill RAM themselves
            stub = f"[page {ref.number} of document {ref.document_id}, paged out]"
            return Eviction(turn.id, key, start, end, stub, True, whole, ref, page)
        stub = stub_text(Span(key, "page", start, end, page=ref))
        return Eviction(turn.id, key, start, end, stub, False, whole, ref, page)

    def page_out(
        self, evictions: Sequence[Eviction], before: Sequence[Segment], after: Sequence[Segment]
    ) -> Iterator[Event]:
        """Make the KV cache match the stubs the kernel put in: ``before`` and ``after`` its change.

        Right to left, so each eviction's positions are still valid when it is applied.
        """
        new = {s.key: s for s in after}
        old = {s.key: s for s in before}
        for eviction in sorted(evictions, key=lambda e: e.start, reverse=True):
            segment = old[eviction.key]
            if eviction.whole:
                self._save(eviction, segment)
            shifted = self._shift(eviction.start, eviction.end, segment, new[eviction.key])
            name = f"{eviction.ref.document_id}:{eviction.ref.number}"
            yield PageOut(name, eviction.end - eviction.start, shifted, eviction.stub)

    def _shift(self, start: int, end: int, old: Segment, new: Segment) -> bool:
        cpu = self.cpu
        cpu.counters.context_tokens += _size(cpu, new)  # the stub is new context
        if not isinstance(cpu, TokenCPU):
            return False  # the next load re-evaluates from here, and counts it
        if list(cpu.tokens[start:end]) != list(cpu.segment_tokens(old)):
            return False  # the cache does not hold this rendering (e.g. not loaded yet)
        return bool(cpu.replace_span(start, end, cpu.segment_tokens(new)))

    # ------------------------------------------------------------------ swap: saved KV states
    def _save(self, eviction: Eviction, segment: Segment) -> None:
        """Keep the page's KV cells in the store, so bringing it back costs a copy instead of a prefill.

        Measured on the story model: restoring a 400-token page took 2.8 ms where
        re-evaluating it took 694 ms (benchmarks/memory.py, ``kv_restore_speedup``).
        """
        cpu = self.cpu
        if segment.trusted or not isinstance(cpu, TokenCPU) or eviction.end > cpu.n_evaluated:
            return
        tokens = tuple(cpu.segment_tokens(segment))
        if tuple(cpu.tokens[eviction.start : eviction.end]) != tokens:
            return
        page_id = self._page_id(eviction.ref.document_id, eviction.ref.number)
        if page_id is not None:
            state = KVState(cpu.save_span(eviction.start, eviction.end), tokens, eviction.start)
            self.store.save_kv(page_id, cpu.name, state, max_bytes=self.saved_budget)

    def swapped_text(self, turns: Sequence[Turn], page: StoredPage, source: str) -> str | None:
        """The text a page had when it was paged out with its KV state saved, so a page-in renders
        the same tokens; None when no state is saved for it."""
        for turn in reversed(turns):
            out = turn.meta.get("paged_out")
            same = (turn.meta.get("document"), turn.meta.get("page")) == (page.document, page.page)
            if out and same and turn.source == source:
                page_id = self._page_id(page.document, page.page)
                return out["text"] if page_id is not None and self.store.has_kv(page_id, self.cpu.name) else None
        return None

    def swap_in(self, turns: Sequence[Turn], segments: Sequence[Segment]) -> None:
        """Put a paged-in page's saved KV back instead of evaluating it (the newest turn brings it)."""
        cpu, turn = self.cpu, turns[-1]
        if not isinstance(cpu, TokenCPU) or turn.role != "result" or "document" not in turn.meta:
            return
        page_id = self._page_id(turn.meta["document"], turn.meta.get("page", 1))
        saved = self.store.load_kv(page_id, cpu.name) if page_id is not None else None
        if saved is None:
            return
        index = next(i for i, s in enumerate(segments) if s.key == f"t{turn.id}")
        if tuple(cpu.segment_tokens(segments[index])) != saved.tokens:
            return  # rendered differently than when it was saved: evaluate it normally
        cpu.load(segments[:index])
        cpu.restore_span(saved.data, saved.tokens, saved.start)
        cpu.counters.restored_tokens += len(saved.tokens)
        self.store.drop_kv(cpu.name, page_id)  # the cells are in the cache now

    def _page_id(self, document: int, number: int) -> int | None:
        try:
            return self.store.page(int(document), int(number)).id
        except KeyError:  # PageNotFound: a document deleted meanwhile
            return None

    # ------------------------------------------------------------------ visibility
    def summary(self) -> RamSummary:
        """RAM as the page table saw it at the last :meth:`plan` (before that step's evictions)."""
        return self.table.summary()

    def close(self) -> None:
        self.store.close()


def _ref(turn: Turn, page: dict[str, Any] | None = None) -> PageRef:
    meta = {**turn.meta, **(page or {})}
    text = meta.get("paged_out", {}).get("text", turn.text)
    return PageRef(
        int(meta.get("document", 0)), int(meta.get("page", 1)), meta.get("title", turn.source), recall_hint(text)
    )


def _stub_counter(cpu: CPU) -> Callable[[str], int]:
    return lambda text: cpu.count_tokens(text, True)  # stubs are kernel text


def _size(cpu: CPU, segment: Segment) -> int:
    if segment.tokens is not None:
        return len(segment.tokens)
    if isinstance(cpu, TokenCPU):
        return len(cpu.segment_tokens(segment))
    return int(cpu.count_tokens(segment.text, segment.trusted))


def _bos(cpu: CPU, segments: Sequence[Segment]) -> int:
    """1 when the CPU puts a BOS token before the rendering (it did not write one itself)."""
    if not (isinstance(cpu, TokenCPU) and cpu.add_bos and cpu.bos >= 0):
        return 0
    first = next((s for s in segments if _size(cpu, s)), None)
    return 0 if first is not None and cpu.segment_tokens(first)[:1] == (cpu.bos,) else 1
