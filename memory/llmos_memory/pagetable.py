"""The page table: which spans of text sit in RAM (the context window), where, and what to evict.

Pure bookkeeping: no model, no KV cache, no store. The pager (``llmos.pager``) mirrors
the rendered context here before each generation (:meth:`PageTable.load`: system prompt,
user turns, model turns, tool results, pages, stubs) and asks :meth:`PageTable.plan_admit`;
the plan says which spans to cut out of the KV cache and which one-line stub to leave in
each one's place. Callers that grow a context span by span use :meth:`PageTable.admit`.

RAM is the context size minus a reserve kept free for generation. Spans are contiguous:
span i ends where span i+1 starts, and the last one ends at :attr:`PageTable.used`.

Eviction policy (in this order, stopping as soon as the new text fits):

1. Pinned spans are never evicted: the system prompt, the user's task, the turn in
   progress, and anything the kernel pins.
2. Pages and tool outputs go first, least recently used first (a span is used when it
   is appended or :meth:`PageTable.touch`-ed). Each leaves a one-line stub that names
   the page and how to bring it back (``recall("…")`` or ``open_page(...)``).
3. Then stubs, oldest first, are dropped outright (the store still has the page, so
   ``recall`` still finds it).
4. Then other unpinned spans (earlier turns), least recently used first, leaving a stub.

Stubs together may use at most ``stub_fraction`` of RAM; past that, the oldest are
dropped, so a long read through a small RAM never fills it with stubs. A span whose stub
would be as big as the span itself is dropped without a stub. When even evicting every
unpinned span is not enough, :class:`RamFull` is raised and nothing changes.

Applying a plan: evictions come right to left; positions in each are valid when it is
applied in that order. For each: remove KV positions ``[start, end)``, shift positions
from ``end`` on by ``shift`` (negative), then evaluate the stub's tokens at
``[start, start + stub_tokens)``. Then call :meth:`PageTable.apply` and append.

Not covered: the KV operations themselves (the kernel's CPU does them), tokenizing
(``count_tokens`` is the caller's), and which spans matter to the task beyond pins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from llmos_errors import LlmosError

from llmos_memory.pages import TokenCounter, estimate_tokens

EVICT_FIRST = ("page", "tool_output")  # kinds evicted first (tier 0)
DEFAULT_STUB_FRACTION = 0.2


class RamFull(LlmosError):
    """The text cannot fit in RAM even after evicting every unpinned span."""


@dataclass(frozen=True)
class PageRef:
    """Which stored page a span holds, so its stub can say how to bring it back."""

    document_id: int
    number: int
    title: str
    hint: str = ""  # a short recall query for the page (see ``llmos_memory.pages.recall_hint``)


@dataclass
class Span:
    key: str  # unique name the kernel chose ("system", "turn-4", "page-3-12")
    kind: str  # "system", "user", "turn", "page", "tool_output", "stub", ...
    start: int
    end: int  # exclusive
    pinned: bool = False
    last_use: int = 0  # logical clock: higher is more recent
    page: PageRef | None = None
    text: str = ""  # the stub's text, for stubs

    @property
    def n_tokens(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Eviction:
    key: str
    start: int
    end: int
    stub: str  # text left in the span's place; "" when it is removed outright
    stub_tokens: int

    @property
    def shift(self) -> int:
        """How far positions from ``end`` on move (negative: left)."""
        return self.stub_tokens - (self.end - self.start)


@dataclass(frozen=True)
class AdmitPlan:
    n_tokens: int
    evictions: tuple[Eviction, ...]  # right to left
    generation: int  # the page table state the plan was made for
    free_after: int  # free tokens once the plan is applied and the text appended


@dataclass(frozen=True)
class RamSummary:
    context_size: int
    reserve: int
    capacity: int  # RAM: context size minus the generation reserve
    used: int
    free: int
    resident_pages: int
    stubs: int
    pinned_tokens: int
    spans: int

    def line(self) -> str:
        return (
            f"RAM {self.used:,}/{self.capacity:,} tokens, {self.free:,} free: {self.resident_pages} pages resident, "
            f"{self.stubs} stubs, {self.pinned_tokens:,} pinned tokens"
        )


def stub_text(span: Span) -> str:
    """The one line left where ``span`` was. Titles and hints are reduced to plain characters
    because they come from untrusted pages and the stub is kernel text."""
    if span.page is None:
        return f"[earlier {span.kind}, {span.n_tokens} tokens, paged out]"
    ref = span.page
    title = re.sub(r"[^\w .,:/@+-]", "", ref.title)[:60].strip() or f"document {ref.document_id}"
    hint = " ".join(re.findall(r"\w+", ref.hint)[:8])
    recall = f'recall("{hint}") or ' if hint else ""
    return (
        f"[page {ref.number} of {title}, {span.n_tokens} tokens, paged out: "
        f"recall it with {recall}open_page(document={ref.document_id}, page={ref.number})]"
    )


@dataclass
class PageTable:
    context_size: int
    reserve: int = 512
    count_tokens: TokenCounter = estimate_tokens
    stub_fraction: float = DEFAULT_STUB_FRACTION
    spans: list[Span] = field(default_factory=list)  # ordered by position
    _clock: int = 0
    _generation: int = 0  # bumped on every change; a plan made for another state is refused

    def __post_init__(self) -> None:
        if not 0 <= self.reserve < self.context_size:
            raise ValueError(f"reserve must be in [0, {self.context_size}), got {self.reserve}")

    # -- state ---------------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self.context_size - self.reserve

    @property
    def used(self) -> int:
        return self.spans[-1].end if self.spans else 0

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.used)

    @property
    def stub_budget(self) -> int:
        return int(self.capacity * self.stub_fraction)

    def get(self, key: str) -> Span:
        for span in self.spans:
            if span.key == key:
                return span
        raise KeyError(f"no span {key!r} in RAM")

    def __contains__(self, key: object) -> bool:
        return any(span.key == key for span in self.spans)

    def find_page(self, document_id: int, number: int) -> Span | None:
        """The resident span holding that page (not a stub of it), if any."""
        for span in self.spans:
            if span.kind != "stub" and span.page and (span.page.document_id, span.page.number) == (document_id, number):
                return span
        return None

    def summary(self) -> RamSummary:
        return RamSummary(
            context_size=self.context_size,
            reserve=self.reserve,
            capacity=self.capacity,
            used=self.used,
            free=self.free,
            resident_pages=sum(1 for s in self.spans if s.page and s.kind != "stub"),
            stubs=sum(1 for s in self.spans if s.kind == "stub"),
            pinned_tokens=sum(s.n_tokens for s in self.spans if s.pinned),
            spans=len(self.spans),
        )

    def _tick(self) -> int:
        self._clock += 1
        self._generation += 1
        return self._clock

    # -- changes -------------------------------------------------------------------------------

    def load(self, spans: Iterable[Span]) -> None:
        """Mirror a context as it stands, replacing what the table held.

        The spans are laid out contiguously from position 0 in the order given (their own
        ``start``/``end`` only give their sizes). The context may be over capacity:
        ``plan_admit(0)`` then says what to evict so it fits.
        """
        position, laid = 0, []
        for span in spans:
            size = span.n_tokens
            laid.append(replace(span, start=position, end=position + size))
            position += size
            self._clock = max(self._clock, span.last_use)
        self.spans = laid
        self._generation += 1

    def append(self, key: str, n_tokens: int, kind: str, *, pinned: bool = False, page: PageRef | None = None) -> Span:
        """Record a span appended at the end of the context. It must fit: plan and apply first."""
        if key in self:
            raise KeyError(f"span {key!r} is already in RAM")
        if n_tokens < 0:
            raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
        if self.used + n_tokens > self.capacity:
            raise RamFull(f"{key!r} needs {n_tokens} tokens but only {self.free} are free; call plan_admit first")
        span = Span(key, kind, self.used, self.used + n_tokens, pinned, self._tick(), page)
        self.spans.append(span)
        return span

    def grow(self, key: str, n_tokens: int) -> None:
        """Extend the last span (tokens the model generated into its turn); may use the generation reserve."""
        if not self.spans or self.spans[-1].key != key:
            raise KeyError(f"only the last span can grow; {key!r} is not it")
        if self.used + n_tokens > self.context_size:
            raise RamFull(f"{key!r} would run past the context window ({self.context_size} tokens)")
        self.spans[-1].end += n_tokens
        self.spans[-1].last_use = self._tick()

    def touch(self, key: str) -> None:
        """Mark a span as just used, so it is evicted later."""
        self.get(key).last_use = self._tick()

    def pin(self, key: str) -> None:
        self.get(key).pinned = True
        self._generation += 1

    def unpin(self, key: str) -> None:
        self.get(key).pinned = False
        self._generation += 1

    # -- eviction ------------------------------------------------------------------------------

    def plan_admit(self, n_tokens: int) -> AdmitPlan:
        """What to evict so ``n_tokens`` more fit (see the module docstring for the policy).

        Raises :class:`RamFull` if they cannot fit even with every unpinned span evicted.
        Does not change the table: :meth:`apply` does.
        """
        if n_tokens < 0:
            raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
        pinned = sum(s.n_tokens for s in self.spans if s.pinned)
        if n_tokens + pinned > self.capacity:
            raise RamFull(f"cannot admit {n_tokens} tokens: RAM holds {self.capacity}, of which {pinned} are pinned")
        chosen: dict[str, Eviction] = {}
        free = self.capacity - self.used
        stub_total = sum(s.n_tokens for s in self.spans if s.kind == "stub")
        for span in sorted((s for s in self.spans if not s.pinned), key=_eviction_order):
            if free >= n_tokens:
                break
            eviction = self._evict(span)
            chosen[span.key] = eviction
            free += span.n_tokens - eviction.stub_tokens
            stub_total += eviction.stub_tokens - (span.n_tokens if span.kind == "stub" else 0)
        # Keep stubs within their budget (and drop them if only that makes room): oldest first,
        # those already in RAM before the ones this plan makes.
        old_stubs = [s for s in self.spans if s.kind == "stub" and not s.pinned and s.key not in chosen]
        old_stubs.sort(key=lambda s: s.last_use)
        new_stubs = [key for key, e in chosen.items() if e.stub]
        for key in [s.key for s in old_stubs] + new_stubs:
            if stub_total <= self.stub_budget and free >= n_tokens:
                break
            span = self.get(key)
            before = chosen.get(key)
            freed = before.stub_tokens if before else span.n_tokens
            chosen[key] = Eviction(key, span.start, span.end, "", 0)
            free += freed
            stub_total -= freed
        if free < n_tokens:
            raise RamFull(
                f"cannot admit {n_tokens} tokens: only {free} would be free after evicting every unpinned span"
            )
        evictions = tuple(sorted(chosen.values(), key=lambda e: e.start, reverse=True))
        return AdmitPlan(n_tokens, evictions, self._generation, free - n_tokens)

    def _evict(self, span: Span) -> Eviction:
        if span.kind == "stub":
            return Eviction(span.key, span.start, span.end, "", 0)
        text = stub_text(span)
        tokens = self.count_tokens(text)
        if tokens >= span.n_tokens:  # a stub no smaller than the span saves nothing
            return Eviction(span.key, span.start, span.end, "", 0)
        return Eviction(span.key, span.start, span.end, text, tokens)

    def apply(self, plan: AdmitPlan) -> None:
        """Carry out a plan from :meth:`plan_admit` made for the current state."""
        if plan.generation != self._generation:
            raise ValueError("this plan was made for an earlier state of the page table; plan again")
        for eviction in plan.evictions:  # right to left, as the kernel applies them to the KV cache
            index = next(i for i, s in enumerate(self.spans) if s.key == eviction.key)
            old = self.spans[index]
            stubs: list[Span] = []
            if eviction.stub:
                clock = self._tick()
                end = old.start + eviction.stub_tokens
                stubs = [Span(f"stub:{old.key}@{clock}", "stub", old.start, end, False, clock, old.page, eviction.stub)]
            self.spans[index : index + 1] = stubs
            for span in self.spans[index + len(stubs) :]:
                span.start += eviction.shift
                span.end += eviction.shift
        self._generation += 1

    def admit(
        self, key: str, n_tokens: int, kind: str, *, pinned: bool = False, page: PageRef | None = None
    ) -> tuple[AdmitPlan, Span]:
        """Plan, apply and append in one step (for callers that apply the plan's KV operations afterwards)."""
        plan = self.plan_admit(n_tokens)
        self.apply(plan)
        return plan, self.append(key, n_tokens, kind, pinned=pinned, page=page)

    def remove(self, key: str) -> Eviction:
        """Take an unpinned span out entirely (a stub of a page that was paged back in); returns the KV cut."""
        span = self.get(key)
        if span.pinned:
            raise ValueError(f"span {key!r} is pinned; unpin it first")
        eviction = Eviction(key, span.start, span.end, "", 0)
        self.apply(AdmitPlan(0, (eviction,), self._generation, self.free + span.n_tokens))
        return eviction


def _eviction_order(span: Span) -> tuple[int, int, int]:
    """Sort key of the eviction policy: tier, then least recently used, then leftmost."""
    tier = 0 if span.kind in EVICT_FIRST else 1 if span.kind == "stub" else 2
    return (tier, span.last_use, span.start)


__all__ = ["AdmitPlan", "Eviction", "PageRef", "PageTable", "RamFull", "RamSummary", "Span", "stub_text"]
