"""The kernel loop: decode, trap the system call, dispatch it, continue from the same KV cache.

One user turn::

    render turns ──► CPU.load (prefills only what is new) ──► CPU.generate
      ──► dialect parser watches every piece ──► call closed: stop at once
      ──► parse ──► policy ──► tool.run ──► result turn ──► render … ──► answer

Contract
--------
* :meth:`Kernel.ask` is a generator of :mod:`llmos.events`; the kernel does no
  terminal or file I/O (artifacts are written by the tools into ``workdir``).
* Model mistakes are observations: a malformed call, an unknown tool, arguments
  that fail validation, a tool that raises, a call the policy denies all become a
  result turn the model reads (with the error, and the list of tools where
  useful). Only bugs in llmos itself propagate as exceptions.
* Budgets: ``max_steps`` tool calls, ``max_tokens`` generated tokens and
  ``max_seconds`` of wall time per :meth:`ask`; ``max_step_tokens`` bounds one
  generation (a model that never stops). Running out yields an ``Error`` event
  with a ``budget_*`` code and ``Done(reason="budget")``.
* Loops inside a call: once the last :data:`LOOP_SPAN` pieces of a generation inside an open call
  are one unit of at most :data:`LOOP_UNIT` pieces over and over (``_usd_usd_usd…``), decoding
  stops and the model reads a malformed-call result that names the unit (sampling penalties such
  as DRY stay off inside calls, where code and data may repeat on purpose, so without this only
  ``max_step_tokens`` ends such a loop). Prose is left to the sampler.
* KV continuity comes from rendering: the dialect renders the whole conversation
  every step, assistant chunks carry their exact tokens, so the CPU finds a common
  prefix and evaluates only the result tokens.
* Continuing: ``ask(None)`` adds no turn and carries on from the last one (a run that
  was interrupted, rebuilt from the store). After a user or result turn, or a chunk cut
  short (a budget, a backend error), the model generates the next step. A chunk whose
  call was trapped but whose result was never recorded gets its call dispatched: a
  read-only tool runs (again, policy checked afresh); a tool with effects does not, the
  model reads an error result saying it may or may not have taken effect. Nothing to
  continue (only the system prompt, or the model already answered) raises
  :class:`ValueError` at once: that is the caller's mistake. Each assistant chunk
  records how it stopped in ``meta["stop"]`` (``answer``, ``call``, ``malformed``,
  ``cut``; with ``meta["raw"]`` the call text or the malformation); a chunk from an
  older store without it counts as cut.

* Several calls in one chunk: a dialect's :meth:`~llmos.dialects.base.Dialect.split_calls`
  says how many calls one closed call block holds (a chat server's message may hold
  several); each is dispatched in order, each is a step, each gets its own result turn.
  Token backends stop decoding at the first close, so there a chunk holds one call.

* Planning from the user's words (policy ``plan: required`` with the ``plan`` tool offered,
  :mod:`llmos.policy.plan`): a user turn that arrives once untrusted text is in the context
  is planned first in a *clean* context: the system prompt and the user's turns only (no
  results, none of the model's own answers, only the ``plan`` tool offered), one forced
  call. A ``plan`` call comes back into the conversation as a chunk and a result marked
  ``clean_plan``, which the policy holds the turn to; anything else is dropped (the policy
  then refuses calls with effects: no plan). The main context is loaded again afterwards
  (its KV prefix up to the first differing turn is kept, the rest is prefilled again).

* Paging: with a :class:`~llmos.pager.Pager`, each step renders once; when the pager says
  results must go, the kernel puts their stubs in its own turns and renders again
  (:meth:`Kernel._context`). The pager never changes a turn itself.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from llmos_tools import Registry, Tool, ToolContext, ToolError, ToolResult, Trust

from llmos.cpu.base import CPU, ContextOverflow, CPUError, Piece, Sampling, Segment, TokenCPU
from llmos.dialects.base import CallClosed, CallSyntaxError, Dialect, Malformed, Text, Turn, TurnEnded
from llmos.events import (
    ApprovalRequest,
    ArtifactEvent,
    CallEvent,
    Done,
    Error,
    Event,
    PolicyDecision,
    Progress,
    ResultEvent,
    Token,
)
from llmos.pager import Pager
from llmos.policy import Decision, Policy, call_digest
from llmos.policy.plan import PLAN_TOOL

MAX_DOCUMENTS = 64  # kept for ToolContext.documents, oldest dropped first
MAX_RESULT_CHARS = 16_000  # longer results are cut here (the memory manager pages them properly)


@dataclass(frozen=True)
class Budgets:
    max_steps: int = 16
    max_tokens: int = 4096
    max_seconds: float = 600.0
    max_step_tokens: int = 1024
    approval_seconds: float = 300.0  # an approval request unanswered this long is a denial


Approver = Callable[[ApprovalRequest], bool]


@dataclass
class _Step:
    """What one generation produced."""

    text: str = ""
    tokens: list[int | None] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    outcome: CallClosed | TurnEnded | Malformed | None = None
    visible: str = ""
    timed_out: bool = False  # cut by the time budget
    loop: str = ""  # the unit a call repeated until the loop guard stopped it


LOOP_UNIT = 8  # pieces (tokens on a token CPU) in the longest unit the loop guard looks for
LOOP_SPAN = 96  # pieces of one unit over and over inside a call: a loop, not code (see the contract)


def repeated_unit(pieces: list[str], unit: int = LOOP_UNIT, span: int = LOOP_SPAN) -> str:
    """The unit that the last ``span`` of ``pieces`` repeat over and over, or "" when they do not."""
    if len(pieces) < span:
        return ""
    tail = pieces[-span:]
    for period in range(1, unit + 1):
        if all(tail[i] == tail[i - period] for i in range(period, span)):
            return "".join(tail[-period:])
    return ""


def _run_length(text: str, unit: str) -> int:
    """How many times ``text`` ends with ``unit`` in a row."""
    count, end = 0, len(text)
    while unit and end >= len(unit) and text.startswith(unit, end - len(unit)):
        count, end = count + 1, end - len(unit)
    return count


class Kernel:
    """Runs a conversation on a CPU in a dialect with a set of tools."""

    def __init__(
        self,
        cpu: CPU,
        dialect: Dialect,
        tools: Registry | Iterable[Tool] = (),
        *,
        system: str | None = None,
        sampling: Sampling | None = None,
        budgets: Budgets | None = None,
        policy: Policy | None = None,
        approver: Approver | None = None,
        workdir: str | Path | None = None,
        session_id: str = "",
        settings: Mapping[str, Any] | None = None,
        turns: list[Turn] | None = None,
        pager: Pager | None = None,
    ) -> None:
        self.cpu = cpu
        self.dialect = dialect
        self.tools = tools if isinstance(tools, Registry) else _registry(tools)
        self.sampling = sampling or Sampling()
        self.budgets = budgets or Budgets()
        self.policy = policy or Policy()
        self.approver = approver
        self.workdir = Path(workdir) if workdir else Path.cwd()
        self.session_id = session_id
        self.settings = dict(settings or {})
        self.pager = pager
        if pager is not None:
            for path in self.settings.get("ingest", []):  # files the task gives: on disk, recallable
                pager.store.add_file(path)
        self.turns: list[Turn] = turns or [Turn("system", system or dialect.default_system, id=0)]
        self.specs = [tool.spec() for tool in self.tools.tools.values()]
        self._call_grammar = dialect.call_grammar(self.specs)  # applied unless sampling.constrain_calls is off
        if isinstance(cpu, TokenCPU):  # a call marker must not end generation
            cpu.not_end.update(t for m in dialect.call_markers if (t := cpu.token_id(m)) is not None)
        self._calls = sum(1 for t in self.turns if t.role == "result")
        # what the model has read, whole, for tools that hand it to code (ToolContext.documents)
        self.documents: dict[str, str] = {t.source: t.text for t in self.turns if t.role == "result" and t.source}
        self._progress: list[Progress] = []

    # ------------------------------------------------------------------ turns
    def _add(self, role: str, text: str, **fields: Any) -> Turn:
        turn = Turn(role, text, id=len(self.turns), **fields)  # type: ignore[arg-type]
        self.turns.append(turn)
        return turn

    # ------------------------------------------------------------------ loop
    def ask(self, text: str | None, *, force_call: bool = False) -> Generator[Event, None, None]:
        """Add a user turn and run until the model answers or a budget runs out.

        ``text=None`` continues the conversation as it stands, adding no turn (see the
        module contract); with nothing to continue it raises :class:`ValueError` here,
        before any event. ``force_call`` constrains the first generation to one
        well-formed call (grammar-constrained decoding, where the backend supports it).
        """
        pending = self._pending() if text is None else []
        return self._loop(text, pending, force_call)

    def can_continue(self) -> bool:
        """Whether ``ask(None)`` has anything to continue."""
        try:
            self._pending()
        except ValueError:
            return False
        return True

    def _pending(self) -> list[CallClosed | Malformed]:
        """What continuing starts with: trapped calls without their results, or (none) a generation."""
        last = self.turns[-1]
        stop = last.meta.get("stop", "answer" if last.ended else "cut")
        if last.role == "user" or (last.role == "assistant" and stop == "cut"):
            return []
        if last.role in ("assistant", "result"):
            return self._unanswered()
        if last.role == "system":
            raise ValueError("nothing to continue: the conversation has no turn yet (ask a question)")
        raise ValueError("nothing to continue: the model already answered (ask a new question)")

    def _unanswered(self) -> list[CallClosed | Malformed]:
        """The calls of the last assistant chunk that have no result turn yet (a chunk may hold several)."""
        index = max((i for i, turn in enumerate(self.turns) if turn.role == "assistant"), default=None)
        if index is None:
            return []  # results the model never asked for (restored from elsewhere): it reads them and goes on
        chunk, answered = self.turns[index], len(self.turns) - index - 1
        stop = chunk.meta.get("stop", "answer" if chunk.ended else "cut")
        if stop == "call":
            return [CallClosed(raw) for raw in self.dialect.split_calls(chunk.meta.get("raw", ""))[answered:]]
        if stop == "malformed" and not answered:
            return [Malformed(chunk.meta.get("raw", ""))]
        if answered:
            return []
        raise ValueError("nothing to continue: the model already answered (ask a new question)")

    def _loop(
        self, text: str | None, pending: list[CallClosed | Malformed], force_call: bool
    ) -> Generator[Event, None, None]:
        if text is not None:
            self._add("user", text)
        started = time.monotonic()
        steps = generated = 0
        answer: list[str] = []
        if text is not None and self._plans_cleanly():
            yield from self._clean_plan(started)
        for call in pending:  # interrupted between trapping a call and recording its result
            steps += 1
            yield from self._resume_call(call)
        while True:
            left = self.budgets.max_tokens - generated
            if time.monotonic() - started > self.budgets.max_seconds:
                yield from self._stop(
                    "budget_time", f"the turn ran past {self.budgets.max_seconds:.0f} s", answer, steps
                )
                return
            sampling = dataclasses.replace(self.sampling, max_tokens=min(self.budgets.max_step_tokens, left))
            if force_call and steps == 0:
                forced: dict[str, Any] = dict(self.dialect.forced_call(self.specs))
                sampling = dataclasses.replace(sampling, **forced)
            elif sampling.constrain_calls and not sampling.grammar:  # a caller's own grammar stands
                sampling = dataclasses.replace(sampling, **self._call_grammar)
            step = _Step()
            try:
                yield from self._generate(sampling, step, started)
            except CPUError as exc:
                self._record_chunk(step, answered=False)
                yield Error("context_full" if isinstance(exc, ContextOverflow) else "backend", str(exc))
                yield Done("".join(answer), "error", steps, self.cpu.counters.as_dict())
                return
            generated += len(step.tokens)
            answer.append(step.visible)
            stopped = step.outcome is None and not step.timed_out and len(step.tokens) < sampling.max_tokens
            self._record_chunk(step, answered=stopped)
            if isinstance(step.outcome, TurnEnded) or stopped:
                yield Done("".join(answer).strip(), "answer", steps, self.cpu.counters.as_dict())
                return
            if step.timed_out:
                continue  # the top of the loop reports the time budget
            if step.outcome is None:
                code = "budget_tokens" if generated >= self.budgets.max_tokens else "runaway"
                message = f"generation stopped after {len(step.tokens)} tokens without ending the turn"
                yield from self._stop(code, message, answer, steps)
                return
            answer.clear()  # the answer is what follows the last call
            for call in self._calls_of(step.outcome):
                steps += 1
                if steps > self.budgets.max_steps:
                    message = f"more than {self.budgets.max_steps} tool calls"
                    yield from self._stop("budget_steps", message, answer, steps)
                    return
                yield from self._system_call(call)

    def _calls_of(self, outcome: CallClosed | Malformed) -> list[CallClosed | Malformed]:
        """One chunk may close several calls (a chat server's message): each is dispatched in turn."""
        if isinstance(outcome, Malformed):
            return [outcome]
        return [CallClosed(raw) for raw in self.dialect.split_calls(outcome.raw)]

    def _context(self) -> Generator[Event, None, list[Segment]]:
        """The conversation rendered once; with a pager, results are evicted until it fits the window
        (the pager plans, the kernel changes its turns, renders again, and the pager edits the cache)."""
        segments = self.dialect.render(self.turns, self.specs)
        if self.pager is None:
            return segments
        while evictions := self.pager.plan(self.turns, segments):
            for eviction in evictions:
                eviction.apply(self.turns[eviction.turn_id])
            before, segments = segments, self.dialect.render(self.turns, self.specs)
            yield from self.pager.page_out(evictions, before, segments)
        self.pager.swap_in(self.turns, segments)
        return segments

    def _generate(
        self, sampling: Sampling, step: _Step, started: float, segments: list[Segment] | None = None
    ) -> Iterator[Event]:
        """One generation on the conversation (or on ``segments``: the clean planning context)."""
        if segments is None:
            segments = yield from self._context()
        self.cpu.load(segments)
        parser = self.dialect.parser(controls=_reports_controls(self.cpu))
        stream = self.cpu.generate(sampling)
        try:
            for piece in stream:
                step.tokens.append(piece.token)
                step.pieces.append(piece.text)
                step.text += piece.text
                for event in parser.feed(piece):
                    yield from self._observe(event, step)
                if step.outcome is not None:
                    return  # the call closed: stop decoding at once
                if time.monotonic() - started > self.budgets.max_seconds:
                    step.timed_out = True
                    return
                if parser.in_call:
                    step.loop = repeated_unit(step.pieces)
                    if step.loop:
                        break  # a loop inside the call: finish() reports the call cut off
            for event in parser.finish():
                yield from self._observe(event, step)
            if step.loop and isinstance(step.outcome, Malformed):
                times = _run_length(step.text, step.loop)
                message = f"the call was stopped: it repeated {step.loop!r} {times} times in a row"
                step.outcome = Malformed(f"{message}; write it again without the repeat", step.outcome.raw)
        finally:
            stream.close()

    def _observe(self, event: object, step: _Step) -> Iterator[Event]:
        if isinstance(event, Text):
            step.visible += event.text
            yield Token(event.text)
        elif isinstance(event, CallClosed | TurnEnded | Malformed) and step.outcome is None:
            step.outcome = event

    def _record_chunk(self, step: _Step, answered: bool) -> None:
        if not step.tokens:
            return
        tokens = tuple(t for t in step.tokens if t is not None)
        exact = tokens if len(tokens) == len(step.tokens) else None
        outcome = step.outcome
        meta: dict[str, Any] = {"stop": "answer" if answered or isinstance(outcome, TurnEnded) else "cut"}
        if isinstance(outcome, CallClosed):
            meta = {"stop": "call", "raw": outcome.raw}
        elif isinstance(outcome, Malformed):
            meta = {"stop": "malformed", "raw": outcome.message}
        self._add("assistant", step.text, tokens=exact, ended=isinstance(outcome, TurnEnded), meta=meta)

    def _stop(self, code: str, message: str, answer: list[str], steps: int) -> Iterator[Event]:
        yield Error(code, message)
        yield Done("".join(answer).strip(), "budget", steps, self.cpu.counters.as_dict())

    # ------------------------------------------------------------------ planning
    def _plans_cleanly(self) -> bool:
        """A required plan, the ``plan`` tool offered, and untrusted text already in the context."""
        offered = PLAN_TOOL in self.tools.tools
        tainted = any(t.role == "result" and not t.trusted for t in self.turns)
        return self.policy.plan == "required" and offered and tainted

    def _clean_plan(self, started: float) -> Iterator[Event]:
        """The new user turn planned from the user's words alone (see the module contract)."""
        clean = [t for t in self.turns if t.role in ("system", "user")]
        tool = self.tools.tools[PLAN_TOOL]
        spec = tool.spec()
        sampling = dataclasses.replace(self.sampling, max_tokens=self.budgets.max_step_tokens)
        sampling = dataclasses.replace(sampling, **dict(self.dialect.forced_call([spec])))
        step = _Step()
        try:
            for event in self._generate(sampling, step, started, self.dialect.render(clean, [spec])):
                if not isinstance(event, Token):  # the plan is not part of the answer
                    yield event
            call = self.dialect.parse(step.outcome.raw) if isinstance(step.outcome, CallClosed) else None
        except (CPUError, CallSyntaxError):
            return  # no plan: calls with effects are refused, and the policy says why
        if call is None or call.name != PLAN_TOOL:
            return
        self._record_chunk(step, answered=False)
        self._calls += 1
        call_id = f"call_{self._calls}"
        yield CallEvent(call_id, call.name, call.arguments, call.raw)
        decision = self.policy.decide(tool, call.arguments, turns=clean)
        yield PolicyDecision(call_id, PLAN_TOOL, decision.action, list(decision.reasons), None)
        result = self._run(tool, call.arguments) if decision.action == "allow" else _error("the policy refused it")
        yield from self._result(call_id, PLAN_TOOL, result, 0.0, clean_plan=decision.action == "allow")

    # ------------------------------------------------------------------ system calls
    def _resume_call(self, pending: CallClosed | Malformed) -> Iterator[Event]:
        """A call trapped before an interruption whose result was never recorded."""
        self._calls = sum(1 for t in self.turns if t.role == "result")  # it keeps the id it had
        try:
            call = self.dialect.parse(pending.raw) if isinstance(pending, CallClosed) else None
        except CallSyntaxError:
            call = None
        tool = self.tools.tools.get(call.name) if call else None
        if tool is None or not tool.effects:  # read-only (or an error result anyway): run it
            yield from self._system_call(pending)
            return
        assert call is not None
        self._calls += 1
        call_id = f"call_{self._calls}"
        yield CallEvent(call_id, call.name, call.arguments, call.raw)
        message = (
            "the run was interrupted while this call was running, so it may or may not have taken effect; "
            "check before calling it again"
        )
        yield from self._result(call_id, call.name, _error(message), 0.0)

    def _system_call(self, outcome: CallClosed | Malformed) -> Iterator[Event]:
        self._calls += 1
        call_id = f"call_{self._calls}"
        if isinstance(outcome, Malformed):
            yield from self._result(call_id, "?", _error(outcome.message), 0.0)
            return
        try:
            call = self.dialect.parse(outcome.raw)
        except CallSyntaxError as exc:
            yield from self._result(call_id, "?", _error(str(exc)), 0.0)
            return
        yield CallEvent(call_id, call.name, call.arguments, call.raw)
        tool = self.tools.tools.get(call.name)
        if tool is None:
            message = f"there is no tool named {call.name!r}; the tools are: {', '.join(self.tools.names()) or 'none'}"
            yield from self._result(call_id, call.name, _error(message), 0.0)
            return
        allowed = yield from self._check(call_id, tool, call.arguments)
        if not allowed:
            yield from self._result(call_id, call.name, _error("the policy did not allow this call"), 0.0)
            return
        started = time.perf_counter()
        result = self._run(tool, call.arguments)
        yield from self._progress_events()
        yield from self._result(call_id, call.name, result, time.perf_counter() - started)

    def _check(self, call_id: str, tool: Tool, arguments: dict[str, Any]) -> Generator[Event, None, bool]:
        decision: Decision = self.policy.decide(tool, arguments, turns=self.turns)
        approved: bool | None = None
        if decision.action == "ask":
            request = ApprovalRequest(
                call_id, tool.name, arguments, "; ".join(decision.reasons), call_digest(tool.name, arguments)
            )
            yield request
            approved = self._approve(request)
        yield PolicyDecision(call_id, tool.name, decision.action, list(decision.reasons), approved)
        return decision.action == "allow" or approved is True

    def _approve(self, request: ApprovalRequest) -> bool:
        """Ask the approver; no approver, an error, or no answer in time is a denial."""
        if self.approver is None:
            return False
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        try:
            answer = pool.submit(self.approver, request).result(timeout=self.budgets.approval_seconds)
            return answer is True
        except Exception:  # a timeout or a broken approver: deny
            return False
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, tool: Tool, arguments: dict[str, Any]) -> ToolResult:
        context = ToolContext(
            session_id=self.session_id,
            workdir=self.workdir,
            emit=lambda kind, data: self._progress.append(Progress(tool.name, {"kind": kind, **data})),
            settings=self.settings,
            documents=MappingProxyType(self.documents),
            memory=self.pager.store if self.pager is not None else None,  # the memory app reads what the pager wrote
        )
        try:
            return tool.run(arguments, context)
        except ToolError as exc:
            return _error(str(exc))
        except Exception as exc:  # a broken app must not take the kernel down; the model is told
            return _error(f"the tool failed: {type(exc).__name__}: {exc}")

    def _progress_events(self) -> Iterator[Event]:
        events, self._progress = self._progress, []
        yield from events

    def _result(
        self, call_id: str, name: str, result: ToolResult, seconds: float, clean_plan: bool = False
    ) -> Iterator[Event]:
        self._remember(result, name)
        text = result.text
        if len(text) > MAX_RESULT_CHARS:
            cut = len(text) - MAX_RESULT_CHARS
            text = text[:MAX_RESULT_CHARS] + f"\n[… {cut} more characters cut]"
        trusted = result.trust == Trust.TRUSTED
        meta: dict[str, Any] = {"call": call_id, "tool": name}
        if result.records:
            meta["records"] = list(result.records)  # read by the policy (llmos.policy.provenance)
        if clean_plan and not result.is_error:
            meta["clean_plan"] = True  # planned from the user's words alone (llmos.policy.plan)
        if self.pager is not None:
            text = yield from self._page(text, result, name, trusted, meta)
        self._add("result", text, trusted=trusted, source=result.source or name, meta=meta)
        for artifact in result.artifacts:
            yield ArtifactEvent(str(artifact.path), artifact.mime, artifact.description)
        artifacts = [str(a.path) for a in result.artifacts]
        yield ResultEvent(call_id, name, text, result.is_error, str(result.trust), result.source, seconds, artifacts)

    def _remember(self, result: ToolResult, name: str) -> None:
        """Keep the whole text of what the model read. A fresh ``open`` hands all of it
        (``result.whole_text``); a later part of a known source (next page, a match, a page-in
        from the store) keeps the whole text already kept, as the newest."""
        if result.is_error or not result.text.strip():
            return
        source = result.source or name
        known = self.documents.pop(source, None)  # re-read: it becomes the newest
        if result.whole_text is not None:
            whole = result.whole_text
        elif known is not None:
            whole = known
        elif result.page_ins:
            return  # a page of a stored document whose whole text this session never saw
        else:
            whole = result.text
        self.documents[source] = whole
        while len(self.documents) > MAX_DOCUMENTS:
            del self.documents[next(iter(self.documents))]

    def _page(
        self, text: str, result: ToolResult, name: str, trusted: bool, meta: dict[str, Any]
    ) -> Generator[Event, None, str]:
        """Results go to the store (disk); what comes back from it is a page-in."""
        assert self.pager is not None
        if result.page_ins:
            yield from self.pager.page_in_events(result.page_ins)
            first = result.page_ins[0]
            meta.update(document=first.document, page=first.page, title=first.title)
            original = self.pager.swapped_text(self.turns, first, result.source) if len(result.page_ins) == 1 else None
            if original is not None:  # render it as it was, so its saved KV state can be put back
                return original
            return text
        if result.is_error or not text.strip():
            return text
        text, page_meta = self.pager.admit(
            text, source=result.source or f"tool:{name}", trusted=trusted, whole=result.whole_text
        )
        meta.update(page_meta)
        return text


def _error(message: str) -> ToolResult:
    return ToolResult(text=f"error: {message}", is_error=True)


def _registry(tools: Iterable[Tool]) -> Registry:
    registry = Registry()
    for tool in tools:
        registry.add(tool)
    if registry.problems:
        raise ValueError("; ".join(registry.problems))
    return registry


def _reports_controls(cpu: CPU) -> bool:
    """Token backends mark control tokens; text backends (HTTP, scripted) do not."""
    return isinstance(cpu, TokenCPU) and cpu.reports_controls


def first_piece_text(pieces: Iterable[Piece]) -> str:  # pragma: no cover - debugging aid
    return "".join(p.text for p in pieces)
