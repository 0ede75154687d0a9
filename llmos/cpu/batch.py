"""Many sessions on one loaded model: batched decoding, fixed KV slots, swapping.

An operating system runs many processes on one CPU; :class:`BatchEngine` runs many
sessions on one llama.cpp model and context. Each session gets a :class:`SessionCPU`, a
:class:`~llmos.cpu.llama.LlamaCPU` that shares the engine's model, context and batch and
owns one sequence id (a *slot*) while it is resident, so the existing :class:`~llmos.kernel.Kernel`
and pager run on it unchanged. Kernels run in their own threads; the engine's thread
gathers the decode steps of every session that is generating and runs them as one
``llama_decode`` (one token per decoding session, plus prefill chunks up to ``n_batch``; on the
process's compute thread, :mod:`llmos.cpu.compute`), then samples each session's token from its
own logits.

Contract
--------
* Each session's KV stays its own: its cells carry its sequence id only. Greedy output
  of a session is the same alone, batched with others, or swapped out and back in.
* Slots: at most ``slots`` sessions are resident. A session that needs the model and has
  no slot takes a free one, or swaps out a victim: first the least recently used session
  that is not generating (running a tool, between turns, paused), else a generating one
  that has held its slot for more than ``quantum`` seconds (time slicing); with neither it
  waits. Swapping out saves the sequence's KV state (``llama_state_seq_get_data``) to
  memory, or to a file under ``swap_dir``; swapping in restores it
  (``llama_state_seq_set_data``) into whichever slot is free: nothing is re-prefilled.
* Process control (:meth:`BatchEngine.pause`, :meth:`~BatchEngine.resume`,
  :meth:`~BatchEngine.kill`) takes effect at the session's next step: a paused session
  waits (and may be swapped out); a killed one raises :class:`SessionKilled` (a
  :class:`~llmos.cpu.base.CPUError`, so the kernel ends its turn with a ``backend`` error).
* Thread safety: one lock guards the llama.cpp context; every KV operation of a session
  holds it and its slot (``pinned``). Tokenizing needs neither. An exception in the engine's
  thread is raised in every session waiting for a step; the engine goes on.
* The window of each session is ``n_ctx``; the context holds ``slots * n_ctx`` cells plus
  room for the scratch sequence (``kv_unified``: the cells are shared, positions are per
  sequence).

Not covered: priorities (every session is equal), sharing the KV of a common prefix
between sessions (each prefills its own), several models in one engine.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llmos.cpu import compute
from llmos.cpu.base import Counters, CPUError, Piece, Sampling
from llmos.cpu.llama import LlamaCPU
from llmos.cpu.sampler import Sampler

_IDS = itertools.count(1)  # session ids, unique in this OS process (the process table adds the pid)
GATHER_SECONDS = 0.02  # how long the engine waits for every generating session's step before decoding


class SessionKilled(CPUError):
    """The session was killed (``llmos ps --kill``, :meth:`BatchEngine.kill`)."""


@dataclass
class _Step:
    """One session's request: evaluate its pending tokens, then sample with ``chain`` (if any)."""

    cpu: SessionCPU
    chain: Sampler | None
    done: bool = False
    token: int = -1
    error: BaseException | None = None


@dataclass
class SwapStats:
    swaps_out: int = 0
    swaps_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    batches: int = 0
    batch_tokens: int = 0
    decode_seconds: float = 0.0  # inside llama_decode, all batches

    def as_dict(self) -> dict[str, float]:
        return dict(vars(self))


@dataclass
class ProcessInfo:
    """One row of the process table (see :mod:`llmos.processes`)."""

    id: str
    state: str  # running | ready (waiting for a slot) | idle | swapped | paused | killed | exited
    slot: int | None
    title: str
    session: str
    tokens: int  # generated
    evaluated: int
    budget: int
    context: int  # tokens in its context now
    swaps: int
    extra: dict[str, object] = field(default_factory=dict)


class SessionCPU(LlamaCPU):
    """One session's CPU on a :class:`BatchEngine`: a LlamaCPU whose sequence is its slot."""

    def __init__(self, engine: BatchEngine, process_id: str, *, title: str = "", budget: int = 0) -> None:
        base = engine.base
        # shared with the engine: the library, the model, the context, the batch
        for name in ("lib", "name", "path", "_model", "_vocab", "_ctx", "n_batch", "n_vocab", "_memory"):
            setattr(self, name, getattr(base, name))
        for name in ("can_shift", "_batch", "add_bos", "bos", "eos", "_pieces", "_seed"):
            setattr(self, name, getattr(base, name))
        self.engine = engine
        self.id = process_id
        self.title, self.session_id, self.budget = title, "", budget
        self.n_ctx = engine.window
        self.scratch = engine.scratch
        self.tokens: list[int] = []
        self.n_evaluated = 0
        self._logits_ready = False
        self.counters = Counters()
        self._seen_keys: dict[str, int] = {}
        self._token_cache: dict[tuple[str, bool], tuple[int, ...]] = {}
        self.not_end: set[int] = set()
        # scheduling state (guarded by the engine's lock)
        self.slot: int | None = None
        self.swapped: bytes | Path | None = None
        self.pinned = 0
        self.generating = False
        self.paused = False
        self.killed = False
        self.closed = False
        self.waiting = False  # for a slot
        self.resident_since = 0.0
        self.last_used = 0.0
        self.swaps = 0

    @property
    def seq(self) -> int:  # type: ignore[override]
        if self.slot is None:
            raise CPUError(f"session {self.id} is not resident (a KV operation outside BatchEngine.using)")
        return self.slot

    # every KV operation holds the engine's lock and this session's slot
    def truncate(self, position: int) -> None:
        if position >= self.n_evaluated:
            del self.tokens[position:]
            return
        with self.engine.using(self):
            super().truncate(position)

    def remove_span(self, start: int, end: int) -> bool:
        with self.engine.using(self):
            return super().remove_span(start, end)

    def replace_span(self, start: int, end: int, tokens: Sequence[int]) -> bool:
        with self.engine.using(self):
            return super().replace_span(start, end, tokens)

    def save_state(self) -> bytes:
        with self.engine.using(self):
            return super().save_state()

    def restore_state(self, data: bytes, tokens: Sequence[int]) -> None:
        with self.engine.using(self):
            super().restore_state(data, tokens)

    def save_span(self, start: int, end: int) -> bytes:
        with self.engine.using(self):
            return super().save_span(start, end)

    def restore_span(self, data: bytes, tokens: Sequence[int], saved_start: int) -> None:
        with self.engine.using(self):
            super().restore_span(data, tokens, saved_start)

    def generate(self, sampling: Sampling) -> Generator[Piece, None, None]:
        self.engine._set_generating(self, True)
        try:
            yield from super().generate(sampling)
        finally:
            self.engine._set_generating(self, False)

    def _next_token(self, chain: Sampler) -> int:
        return self.engine.step(self, chain)

    def _held_out_of_calls(self) -> tuple[int, ...]:
        return self.engine.base._held_out_of_calls()  # one vocabulary: computed once, on the engine's CPU

    def close(self) -> None:
        """Leave the engine (its slot and any swapped state are freed); the model stays loaded."""
        self.engine.detach(self)

    def __del__(self) -> None:  # the engine owns the model: nothing to free here
        pass


class BatchEngine:
    """One llama.cpp model and context shared by many :class:`SessionCPU`\\ s (module docstring)."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        slots: int = 4,
        n_ctx: int = 2048,
        n_batch: int = 512,
        n_threads: int | None = None,
        swap_dir: str | Path | None = None,
        quantum: float = 2.0,
        gather_seconds: float = GATHER_SECONDS,
        lora: str | Path | None = None,
        flash_attn: bool = False,
    ) -> None:
        if slots < 1:
            raise ValueError("a batch engine needs at least one slot")
        self.slots, self.window, self.scratch = slots, n_ctx, slots
        cells = slots * n_ctx + n_batch  # room for the scratch sequence's edits
        self.base = LlamaCPU(
            model_path,
            n_ctx=cells,
            n_batch=n_batch,
            n_threads=n_threads,
            sequences=slots + 1,
            lora=lora,
            flash_attn=flash_attn,
        )
        self.name = self.base.name
        self.swap_dir = Path(swap_dir) if swap_dir else None
        self.quantum, self.gather_seconds = quantum, gather_seconds
        self.stats = SwapStats()
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.owners: list[SessionCPU | None] = [None] * slots
        self.sessions: dict[str, SessionCPU] = {}
        self.queue: list[_Step] = []
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="llmos-batch-engine", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- sessions
    def session(self, *, title: str = "", budget: int = 0) -> SessionCPU:
        """A new session's CPU (not resident until it first needs the model)."""
        with self.lock:
            if self._closed:
                raise CPUError("the batch engine is closed")
            cpu = SessionCPU(self, str(next(_IDS)), title=title, budget=budget)
            self.sessions[cpu.id] = cpu
            return cpu

    def detach(self, cpu: SessionCPU) -> None:
        with self.cond:
            while cpu.pinned:
                self.cond.wait()
            if cpu.slot is not None and not self._closed:
                self.base.lib.llama_memory_seq_rm(self.base._memory, cpu.slot, -1, -1)
                self.owners[cpu.slot] = None
            cpu.slot = None
            self._drop_swap(cpu)
            cpu.closed = True
            self.sessions.pop(cpu.id, None)
            self.cond.notify_all()

    def pause(self, process_id: str) -> None:
        self._control(process_id, paused=True)

    def resume(self, process_id: str) -> None:
        self._control(process_id, paused=False)

    def kill(self, process_id: str) -> None:
        self._control(process_id, killed=True)

    def _control(self, process_id: str, **flags: bool) -> None:
        with self.cond:
            cpu = self.sessions.get(process_id)
            if cpu is None:
                raise KeyError(f"no session {process_id!r} on this engine")
            for name, value in flags.items():
                setattr(cpu, name, value)
            self.cond.notify_all()

    def processes(self) -> list[ProcessInfo]:
        """A snapshot of every session (the process table's rows)."""
        with self.lock:
            return [self._info(cpu) for cpu in self.sessions.values()]

    def _info(self, cpu: SessionCPU) -> ProcessInfo:
        if cpu.killed:
            state = "killed"
        elif cpu.paused:
            state = "paused"
        elif cpu.waiting:
            state = "ready"
        elif cpu.slot is None:
            state = "swapped" if cpu.swapped is not None else "idle"
        else:
            state = "running" if cpu.generating else "idle"
        c = cpu.counters
        return ProcessInfo(
            cpu.id, state, cpu.slot, cpu.title, cpu.session_id, c.tokens_sampled, c.tokens_evaluated,
            cpu.budget, len(cpu.tokens), cpu.swaps,
        )  # fmt: skip

    # ---------------------------------------------------------------- slots
    @contextlib.contextmanager
    def using(self, cpu: SessionCPU) -> Iterator[None]:
        """Hold the context's lock with ``cpu`` resident (swapped in if it was not)."""
        with self.cond:
            self._admit(cpu)
            cpu.pinned += 1
            try:
                yield
            finally:
                cpu.pinned -= 1
                cpu.last_used = time.monotonic()
                self.cond.notify_all()

    def _admit(self, cpu: SessionCPU) -> None:
        """Make ``cpu`` resident (lock held): a free slot, or a victim swapped out, or wait."""
        while True:
            if cpu.closed:
                raise CPUError(f"session {cpu.id} is closed")
            if cpu.killed:
                raise SessionKilled(f"session {cpu.id} was killed")
            if self._closed:
                raise CPUError("the batch engine is closed")
            if cpu.paused:
                self.cond.wait(0.5)
                continue
            if cpu.slot is not None:
                cpu.waiting = False
                return
            cpu.waiting = True
            free = next((slot for slot, owner in enumerate(self.owners) if owner is None), None)
            if free is None:
                victim = self._victim()
                if victim is not None:
                    self._swap_out(victim)
                    continue
                self.cond.wait(self.quantum / 4)
                continue
            self._swap_in(cpu, free)
            cpu.waiting = False
            return

    def _victim(self) -> SessionCPU | None:
        """Who gives up a slot: the LRU session not generating, else one past its time slice."""
        resident = [c for c in self.owners if c is not None and not c.pinned]
        resting = [c for c in resident if not c.generating or c.paused or c.killed]
        if resting:
            return min(resting, key=lambda c: c.last_used)
        now = time.monotonic()
        expired = [c for c in resident if now - c.resident_since > self.quantum]
        return min(expired, key=lambda c: c.resident_since) if expired else None

    def _swap_out(self, cpu: SessionCPU) -> None:
        started = time.perf_counter()
        lib, slot = self.base.lib, cpu.slot
        assert slot is not None
        data = b""
        if cpu.n_evaluated:
            size = lib.llama_state_seq_get_size(self.base._ctx, slot)
            buffer = (ctypes.c_uint8 * size)()
            written = lib.llama_state_seq_get_data(self.base._ctx, buffer, size, slot)
            data = ctypes.string_at(buffer, written)
        lib.llama_memory_seq_rm(self.base._memory, slot, -1, -1)
        if self.swap_dir is not None and data:
            self.swap_dir.mkdir(parents=True, exist_ok=True)
            path = self.swap_dir / f"session-{id(self)}-{cpu.id}.kv"
            path.write_bytes(data)
            cpu.swapped = path
        else:
            cpu.swapped = data
        self.owners[slot] = None
        cpu.slot = None
        cpu.swaps += 1
        self.stats.swaps_out += 1
        self.stats.bytes_out += len(data)
        self.stats.seconds += time.perf_counter() - started

    def _swap_in(self, cpu: SessionCPU, slot: int) -> None:
        started = time.perf_counter()
        lib = self.base.lib
        lib.llama_memory_seq_rm(self.base._memory, slot, -1, -1)
        data = cpu.swapped.read_bytes() if isinstance(cpu.swapped, Path) else cpu.swapped
        if data:
            buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
            if not lib.llama_state_seq_set_data(self.base._ctx, buffer, len(data), slot):
                raise CPUError(f"llama_state_seq_set_data could not swap session {cpu.id} back in")
            cpu.counters.restored_tokens += cpu.n_evaluated
            self.stats.swaps_in += 1
        elif cpu.n_evaluated:
            raise CPUError(f"session {cpu.id} lost its KV state")  # a bug: evaluated tokens were never saved
        self._drop_swap(cpu)
        self.owners[slot] = cpu
        cpu.slot = slot
        cpu._logits_ready = False
        cpu.resident_since = time.monotonic()
        self.stats.seconds += time.perf_counter() - started

    def _drop_swap(self, cpu: SessionCPU) -> None:
        if isinstance(cpu.swapped, Path):
            cpu.swapped.unlink(missing_ok=True)
        cpu.swapped = None

    # ---------------------------------------------------------------- batched decoding
    def _set_generating(self, cpu: SessionCPU, value: bool) -> None:
        with self.cond:
            cpu.generating = value
            self.cond.notify_all()

    def step(self, cpu: SessionCPU, chain: Sampler | None) -> int:
        """Evaluate ``cpu``'s pending tokens in the next batch and sample its next token with ``chain``."""
        with self.cond:
            self._admit(cpu)
            request = _Step(cpu, chain)
            cpu.pinned += 1
            self.queue.append(request)
            self.cond.notify_all()
            try:
                while not request.done:
                    self.cond.wait()
            finally:
                cpu.pinned -= 1
                cpu.last_used = time.monotonic()
                self.cond.notify_all()
        if request.error is not None:
            raise request.error
        return request.token

    def _loop(self) -> None:
        with self.cond:
            while not self._closed:
                if not self.queue:
                    self.cond.wait()
                    continue
                deadline = time.monotonic() + self.gather_seconds
                while not self._closed and len(self.queue) < self._expected():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self.cond.wait(left)
                if self.queue and not self._closed:
                    try:
                        self._run_batch()
                    except Exception as exc:  # our bug: it raises in every waiting session, none waits forever
                        self._fail_queue(exc)
                    self.cond.notify_all()

    def _fail_queue(self, error: BaseException) -> None:
        for request in self.queue:
            request.error, request.done = error, True
        self.queue.clear()

    def _expected(self) -> int:
        """How many steps to wait for: every resident session that is generating."""
        return sum(1 for c in self.owners if c is not None and c.generating and not c.paused and not c.killed)

    def _run_batch(self) -> None:
        """One ``llama_decode`` over the queued steps: decoding sessions first, then prefill chunks."""
        base, lib = self.base, self.base.lib
        batch, capacity, used = base._batch, base.n_batch, 0
        planned: list[tuple[_Step, int, int]] = []  # step, tokens taken, batch index of its last one
        for request in sorted(self.queue, key=lambda r: len(r.cpu.tokens) - r.cpu.n_evaluated):
            cpu = request.cpu
            if cpu.n_evaluated == len(cpu.tokens):  # its logits are gone: run its last token again
                lib.llama_memory_seq_rm(base._memory, cpu.seq, cpu.n_evaluated - 1, -1)
                cpu.n_evaluated -= 1
            pending = len(cpu.tokens) - cpu.n_evaluated
            take = min(pending, capacity - used)
            if take <= 0:
                break
            for i in range(take):
                batch.token[used + i] = cpu.tokens[cpu.n_evaluated + i]
                batch.pos[used + i] = cpu.n_evaluated + i
                batch.n_seq_id[used + i] = 1
                batch.seq_id[used + i][0] = cpu.seq
                batch.logits[used + i] = i == pending - 1
            used += take
            planned.append((request, take, used - 1))
        batch.n_tokens = used
        started = time.perf_counter()
        status = compute.decode(lib, base._ctx, batch)
        seconds = time.perf_counter() - started
        self.stats.batches += 1
        self.stats.batch_tokens += used
        self.stats.decode_seconds += seconds
        for request, take, index in planned:
            self._finish(request, take, index, status, seconds)

    def _finish(self, request: _Step, take: int, index: int, status: int, seconds: float) -> None:
        cpu = request.cpu
        if status != 0:
            request.error = CPUError(f"llama_decode failed with status {status}")
            request.done = True
            self.queue.remove(request)
            return
        cpu.n_evaluated += take
        cpu.counters.tokens_evaluated += take
        cpu.counters.eval_seconds += seconds
        if cpu.n_evaluated < len(cpu.tokens):
            return  # more prefill next batch
        cpu._logits_ready = True
        if request.chain is not None:
            started = time.perf_counter()
            request.token = request.chain.sample(self.base._ctx, index)
            cpu.counters.sample_seconds += time.perf_counter() - started
        request.done = True
        self.queue.remove(request)

    # ---------------------------------------------------------------- lifetime
    def close(self) -> None:
        with self.cond:
            if self._closed:
                return
            self._closed = True
            self._fail_queue(CPUError("the batch engine was closed"))
            self.cond.notify_all()
        self._thread.join(timeout=5)
        with self.lock:
            for cpu in list(self.sessions.values()):
                self._drop_swap(cpu)
                cpu.closed = True
            self.sessions.clear()
            self.base.close()

    def __enter__(self) -> BatchEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
