"""The llama.cpp CPU, through llama-cpp-python's low-level (ctypes) API.

Why the low-level API: the kernel needs to own the KV cache (prefill only what is
new, cut a span out and shift what follows, stop the instant a call closes), and
the high-level ``Llama`` helpers re-derive all of that on each call.

Contract (in addition to :mod:`llmos.cpu.base`)
-----------------------------------------------
* One sequence (``seq``, id 0; :mod:`llmos.cpu.batch` runs several on one context, each a
  subclass whose ``seq`` is its slot). ``self.tokens`` is the context; the first ``n_evaluated`` of
  them are in the KV cache at positions ``0..n_evaluated-1``. The last sampled
  token is in ``tokens`` but not yet evaluated: it is evaluated with whatever comes
  next, so a call's closing marker costs nothing extra.
* :meth:`truncate` drops everything from a position on; :meth:`remove_span` cuts
  ``[start, end)`` and shifts the rest left with ``llama_memory_seq_rm`` +
  ``llama_memory_seq_add`` when the cache can shift (``llama_memory_can_shift``),
  else it truncates at ``start`` and re-evaluates the suffix (counted in
  ``reprefilled_tokens``).
* ``lora``: a LoRA adapter GGUF that llama.cpp applies over the model at every step (llmos-smol).
* Threads: ``n_threads`` defaults to the number of cores, because llama.cpp threads
  spin, and oversubscribing a small machine slows decoding by orders of magnitude. Every
  ``llama_decode`` runs on the process's one compute thread (:mod:`llmos.cpu.compute`), whichever
  thread calls this CPU: two threads that decode would keep two OpenMP teams that throttle each other.

Not covered: several sequences here (see :mod:`llmos.cpu.batch`), GPU offload settings beyond ``n_gpu_layers``,
several LoRA adapters or scales other than 1, embeddings.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import os
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

from llmos.cpu import compute
from llmos.cpu.base import ContextOverflow, Counters, CPUError, Piece, Sampling, Segment, count_distinct
from llmos.cpu.sampler import Sampler

SCRATCH = 1  # the scratch sequence id used by replace_span
_runtime: dict[str, object] = {}  # the loaded library and the log callback kept alive


def _lib():
    """Import llama_cpp lazily (it loads a shared library) and initialise it once."""
    import llama_cpp

    if "log" not in _runtime:
        _runtime["log"] = llama_cpp.llama_log_callback(_log)
        llama_cpp.llama_log_set(_runtime["log"], ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
    return llama_cpp


def extra_buffers_safe() -> bool:
    """Whether llama.cpp may repack weights into its extra CPU buffer types.

    With an AMX build (``AMX_INT8 = 1`` in the system info), llama-cpp-python 0.3.36
    crashes (SIGSEGV) on the first decode of a Q4_1 model (SmolLM2-135M-Instruct) once the
    AMX buffer has repacked its weights; without the extra buffers it decodes correctly.
    So AMX builds keep weights in plain CPU buffers; other builds keep the repacking.
    """
    return b"AMX_INT8 = 1" not in _lib().llama_print_system_info()


def _log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # llama.cpp is chatty on stderr; the kernel does no terminal I/O, so it is silent unless asked.
    if os.environ.get("LLMOS_LLAMA_LOG"):
        print(text.decode("utf-8", "replace"), end="")


def gguf_metadata(path: str | Path, key: str) -> str:
    """One metadata string of a GGUF file, read with its vocabulary only (no weights); ``""`` if absent."""
    lib = _lib()
    params = lib.llama_model_default_params()
    params.vocab_only = True
    model = lib.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise CPUError(f"llama.cpp could not read {path} (not a GGUF model?)")
    try:
        size = lib.llama_model_meta_val_str(model, key.encode(), None, 0)
        if size < 0:
            return ""
        buffer = ctypes.create_string_buffer(size + 1)
        lib.llama_model_meta_val_str(model, key.encode(), buffer, size + 1)
        return buffer.value.decode("utf-8", "replace")
    finally:
        lib.llama_model_free(model)


class LlamaCPU:
    """A GGUF model run in-process by llama.cpp."""

    reports_controls = True  # pieces carry token ids and a control flag
    seq = 0  # the sequence id of this context in the KV cache
    scratch = SCRATCH  # a second sequence, scratch space for replace_span and save/restore_span

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 2048,
        n_batch: int = 512,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        seed: int = 0,
        flash_attn: bool = False,
        sequences: int = 2,
        lora: str | Path | None = None,
    ) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise CPUError(f"model file not found: {path}")
        self.lib = lib = _lib()
        self.name = path.name
        self.path = path
        model_params = lib.llama_model_default_params()
        model_params.n_gpu_layers = n_gpu_layers
        model_params.use_extra_bufts = extra_buffers_safe()
        self._model = lib.llama_model_load_from_file(str(path).encode(), model_params)
        if not self._model:
            raise CPUError(f"llama.cpp could not load {path} (not a GGUF model, or an unsupported architecture)")
        self._vocab = lib.llama_model_get_vocab(self._model)
        ctx_params = lib.llama_context_default_params()
        ctx_params.n_ctx = n_ctx
        ctx_params.n_batch = n_batch
        ctx_params.n_ubatch = n_batch
        threads = n_threads or os.cpu_count() or 1
        ctx_params.n_threads = threads
        ctx_params.n_threads_batch = threads
        ctx_params.no_perf = True
        # a second sequence, sharing one KV buffer, is scratch space for replace_span; more are
        # for llmos.cpu.batch, whose sessions each own one (their cells share the n_ctx of the buffer)
        ctx_params.n_seq_max = sequences
        ctx_params.kv_unified = True
        # llama.cpp's default (auto) turns flash attention on; on a CPU it is slower for
        # small models, so it is opt-in here, as in llama-cpp-python's Llama.
        ctx_params.flash_attn_type = (
            lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        self._ctx = lib.llama_init_from_model(self._model, ctx_params)
        if not self._ctx:
            lib.llama_model_free(self._model)
            raise CPUError(f"llama.cpp could not create a context of {n_ctx} tokens for {path}")
        self._lora = self._apply_lora(Path(lora)) if lora else None
        self.n_ctx = lib.llama_n_ctx(self._ctx)
        self.n_batch = n_batch
        self.n_vocab = lib.llama_vocab_n_tokens(self._vocab)
        self._memory = lib.llama_get_memory(self._ctx)
        self.can_shift = bool(lib.llama_memory_can_shift(self._memory))
        self._batch = lib.llama_batch_init(n_batch, 0, 2)
        self.add_bos = bool(lib.llama_vocab_get_add_bos(self._vocab))
        self.bos = lib.llama_vocab_bos(self._vocab)
        self.eos = lib.llama_vocab_eos(self._vocab)
        self.tokens: list[int] = []
        self.n_evaluated = 0
        self._logits_ready = False  # the last decode produced logits for the last context token
        self.counters = Counters()
        self._seen_keys: dict[str, int] = {}
        self._token_cache: dict[tuple[str, bool], tuple[int, ...]] = {}
        self._pieces: dict[int, bytes] = {}
        # llama.cpp guesses end-of-generation tokens from their text, and "<|call|>" is one of
        # its guesses (gpt-oss ends a message there); the kernel adds its dialect's call markers here
        self.not_end: set[int] = set()
        self._seed = seed
        self._controls: tuple[int, ...] | None = None  # see _held_out_of_calls

    # ---------------------------------------------------------------- tokens
    def tokenize(self, text: str, *, special: bool, add_bos: bool = False) -> list[int]:
        """Tokenize ``text``; ``special`` turns control-token parsing on (trusted text only)."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buffer = (self.lib.llama_token * capacity)()
        n = self.lib.llama_tokenize(self._vocab, data, len(data), buffer, capacity, add_bos, special)
        if n < 0:
            raise CPUError(f"tokenizer needed {-n} slots for {len(data)} bytes")
        return list(buffer[:n])

    def piece(self, token: int, *, special: bool = True) -> bytes:
        if special:  # the decode loop's case: cached, since ctypes buffers cost more than the lookup
            cached = self._pieces.get(token)
            if cached is None:
                cached = self._pieces[token] = self._piece(token, special=True)
            return cached
        return self._piece(token, special=False)

    def _piece(self, token: int, *, special: bool) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        n = self.lib.llama_token_to_piece(self._vocab, token, buffer, 64, 0, special)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = self.lib.llama_token_to_piece(self._vocab, token, buffer, -n, 0, special)
        return buffer.raw[:n]

    def detokenize(self, tokens: Sequence[int], *, special: bool = True) -> str:
        return b"".join(self.piece(t, special=special) for t in tokens).decode("utf-8", "replace")

    def is_control(self, token: int) -> bool:
        return bool(self.lib.llama_vocab_is_control(self._vocab, token))

    def is_end(self, token: int) -> bool:
        """End of generation: llama.cpp's end tokens, less those a dialect needs (see ``not_end``)."""
        return token not in self.not_end and self._is_eog(token)

    def _is_eog(self, token: int) -> bool:
        return bool(self.lib.llama_vocab_is_eog(self._vocab, token))

    def token_text(self, token: int) -> str:
        """A token's text with control tokens spelled out (``<|im_end|>``); ``""`` for -1 (none)."""
        return self.piece(token).decode("utf-8", "replace") if token >= 0 else ""

    def end_texts(self) -> tuple[str, ...]:
        """The texts of every end-of-generation token of the vocabulary (``<|im_end|>``, ``<|endoftext|>``)."""
        return tuple(self.token_text(t) for t in range(self.n_vocab) if self._is_eog(t))

    def token_id(self, text: str) -> int | None:
        """The id of a control token such as ``<|call|>``, or ``None`` if the vocabulary lacks it."""
        tokens = self.tokenize(text, special=True)
        return tokens[0] if len(tokens) == 1 and self.is_control(tokens[0]) else None

    def metadata(self, key: str) -> str:
        """A GGUF metadata string (e.g. ``tokenizer.chat_template``), or ``""``."""
        size = self.lib.llama_model_meta_val_str(self._model, key.encode(), None, 0)
        if size < 0:
            return ""
        buffer = ctypes.create_string_buffer(size + 1)
        self.lib.llama_model_meta_val_str(self._model, key.encode(), buffer, size + 1)
        return buffer.value.decode("utf-8", "replace")

    def count_tokens(self, text: str, trusted: bool = False) -> int:
        return len(self.tokenize(text, special=trusted))

    def segment_tokens(self, segment: Segment) -> tuple[int, ...]:
        if segment.tokens is not None:
            return segment.tokens
        key = (segment.text, segment.trusted)
        cached = self._token_cache.get(key)
        if cached is None:
            cached = tuple(self.tokenize(segment.text, special=segment.trusted))
            if len(self._token_cache) > 4096:
                self._token_cache.clear()
            self._token_cache[key] = cached
        return cached

    # ---------------------------------------------------------------- KV cache
    def load(self, segments: Sequence[Segment]) -> None:
        target: list[int] = []
        for segment in segments:
            tokens = self.segment_tokens(segment)
            count_distinct(self.counters, self._seen_keys, segment, len(tokens))
            target.extend(tokens)
        # a fresh context starts with BOS, unless the rendering wrote it (a chat template's bos_token)
        if self.add_bos and self.bos >= 0 and target[:1] != [self.bos]:
            target.insert(0, self.bos)
            if not self.tokens:
                self.counters.context_tokens += 1
        self.set_tokens(target)

    def set_tokens(self, target: Sequence[int]) -> None:
        """Make the context ``target``: keep the common prefix, drop the rest, queue the new suffix."""
        if len(target) > self.n_ctx:
            raise ContextOverflow(f"context of {len(target)} tokens exceeds the window of {self.n_ctx}")
        common = 0
        limit = min(len(target), len(self.tokens))
        while common < limit and target[common] == self.tokens[common]:
            common += 1
        if common < self.n_evaluated:
            self.counters.reprefilled_tokens += min(len(target), self.n_evaluated) - common
            self.truncate(common)
        self.tokens = list(target)

    def truncate(self, position: int) -> None:
        """Forget everything from ``position`` on."""
        if position < self.n_evaluated:
            self.lib.llama_memory_seq_rm(self._memory, self.seq, position, -1)
            self.n_evaluated = position
            self._logits_ready = False
        del self.tokens[position:]

    def remove_span(self, start: int, end: int) -> bool:
        """Cut tokens ``[start, end)`` out of the context; return True if the KV cache was shifted.

        Without shifting support the suffix is re-evaluated at the next decode.
        """
        if not 0 <= start <= end <= len(self.tokens):
            raise ValueError(f"span [{start}, {end}) is outside the context of {len(self.tokens)} tokens")
        if start == end:
            return True
        if end > self.n_evaluated or not self.can_shift:
            suffix = self.tokens[end:]
            self.counters.reprefilled_tokens += max(0, self.n_evaluated - end)
            self.truncate(start)
            self.tokens.extend(suffix)
            return False
        lib = self.lib
        if not lib.llama_memory_seq_rm(self._memory, self.seq, start, end):
            raise CPUError("llama_memory_seq_rm refused a partial removal")
        lib.llama_memory_seq_add(self._memory, self.seq, end, -1, -(end - start))
        del self.tokens[start:end]
        self.n_evaluated -= end - start
        return True

    def replace_span(self, start: int, end: int, tokens: Sequence[int]) -> bool:
        """Put ``tokens`` where ``[start, end)`` was (a page becomes its stub) without touching the suffix.

        The span is cut out, the suffix shifts to make room (left when the new tokens
        are fewer), and the new tokens are evaluated at their positions; causal
        attention lets them see only the prefix. The suffix keeps the KV it computed
        while the old span was there: that is what paging by shifting trades for not
        re-evaluating it. Returns False when the backend could not shift and the
        suffix will be re-evaluated instead (counted in ``reprefilled_tokens``).
        """
        delta = len(tokens) - (end - start)
        if delta > 0 or end > self.n_evaluated or not self.can_shift:
            suffix = self.tokens[end:]
            self.counters.reprefilled_tokens += max(0, self.n_evaluated - end)
            self.truncate(start)
            self.tokens.extend(tokens)
            self.tokens.extend(suffix)
            return False
        lib, memory = self.lib, self._memory
        if not lib.llama_memory_seq_rm(memory, self.seq, start, end):
            raise CPUError("llama_memory_seq_rm refused a partial removal")
        if delta:
            lib.llama_memory_seq_add(memory, self.seq, end, -1, delta)  # the suffix moves, leaving a hole
        # llama.cpp only decodes a sequence at its end, so the new tokens are decoded in a
        # scratch sequence holding a copy of the prefix, then handed to sequence 0.
        seq, scratch = self.seq, self.scratch
        lib.llama_memory_seq_cp(memory, seq, scratch, 0, start)
        self._decode_at(list(tokens), start, seq=scratch)
        lib.llama_memory_seq_cp(memory, scratch, seq, start, start + len(tokens))
        lib.llama_memory_seq_rm(memory, scratch, -1, -1)
        self.tokens[start:end] = list(tokens)
        self.n_evaluated += delta
        return True

    def _decode_at(self, tokens: list[int], position: int, seq: int = 0) -> None:
        """Evaluate ``tokens`` at positions ``position…`` without moving ``n_evaluated``."""
        lib, batch = self.lib, self._batch
        started = time.perf_counter()
        for offset in range(0, len(tokens), self.n_batch):
            chunk = tokens[offset : offset + self.n_batch]
            batch.n_tokens = len(chunk)
            for i, token in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = position + offset + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = False
            status = compute.decode(lib, self._ctx, batch)
            if status != 0:
                raise CPUError(f"llama_decode failed with status {status}")
            self.counters.tokens_evaluated += len(chunk)
        self.counters.eval_seconds += time.perf_counter() - started
        self._logits_ready = False

    def _evaluate_pending(self) -> None:
        """Run every token not yet in the KV cache through the model, in batches."""
        lib, batch = self.lib, self._batch
        if self.n_evaluated == len(self.tokens) and not self._logits_ready and self.tokens:
            # nothing new, but the last logits are gone (a span was edited): run the last token again
            self.lib.llama_memory_seq_rm(self._memory, self.seq, self.n_evaluated - 1, -1)
            self.n_evaluated -= 1
        started = time.perf_counter()
        while self.n_evaluated < len(self.tokens):
            chunk = self.tokens[self.n_evaluated : self.n_evaluated + self.n_batch]
            batch.n_tokens = len(chunk)
            for i, token in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = self.n_evaluated + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = self.seq
                batch.logits[i] = i == len(chunk) - 1
            status = compute.decode(lib, self._ctx, batch)
            if status != 0:
                raise CPUError(f"llama_decode failed with status {status}")
            self.n_evaluated += len(chunk)
            self.counters.tokens_evaluated += len(chunk)
            self._logits_ready = True
        self.counters.eval_seconds += time.perf_counter() - started

    # ---------------------------------------------------------------- sampling
    def _sampler(self, sampling: Sampling) -> Sampler:
        trigger = None
        if sampling.grammar and sampling.grammar_trigger:
            trigger = self.token_id(sampling.grammar_trigger)
            if trigger is None:  # see llmos.cpu.sampler: a text trigger is not safe in this llama.cpp
                name = sampling.grammar_trigger
                raise CPUError(f"a lazy grammar's trigger must be a control token: {name!r} is not one")
        controls = self._held_out_of_calls() if sampling.grammar else ()
        return Sampler(self.lib, self._vocab, self.n_vocab, sampling, self._seed, trigger, controls)

    def _held_out_of_calls(self) -> tuple[int, ...]:
        """The control tokens a grammar-held call may not contain: all but end of generation
        (:mod:`llmos.cpu.sampler`). Computed once per vocabulary."""
        if self._controls is None:
            self._controls = tuple(t for t in range(self.n_vocab) if self.is_control(t) and not self._is_eog(t))
        return self._controls

    def generate(self, sampling: Sampling) -> Generator[Piece, None, None]:
        """Decode token by token. Closing the iterator stops at once.

        A forced call (``sampling.forced_prefix``/``forced_suffix``, used with a
        grammar for the call body) inserts the prefix markup first; when the grammar
        is complete llama.cpp allows only end-of-generation tokens, and that token is
        replaced by the suffix markup. A lazy grammar (``grammar_trigger``) does the
        same from the model's own trigger token on. Grammars cannot name control tokens themselves
        in this llama.cpp (token elements reject every token), hence this split.
        """
        if not self.tokens:
            raise CPUError("nothing to continue from: load a context first")
        chain = self._sampler(sampling)
        # a character can span tokens (byte-fallback tokens): decode incrementally
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        try:
            yield from self._force(sampling.forced_prefix)
            for _ in range(sampling.max_tokens):
                if len(self.tokens) >= self.n_ctx:
                    raise ContextOverflow(f"the context window of {self.n_ctx} tokens is full")
                held = chain.held  # before this token: a trigger that llama.cpp counts as an end opens a call
                token = self._next_token(chain)
                self.counters.tokens_sampled += 1
                end = self.is_end(token)
                if self._is_eog(token) and held and sampling.forced_suffix:
                    yield from self._force(sampling.forced_suffix)
                    return
                self.tokens.append(token)
                self.counters.context_tokens += 1
                control = end or self.is_control(token)
                text = self.piece(token).decode("utf-8", "replace") if control else decoder.decode(self.piece(token))
                yield Piece(token, text, control)
                if end:
                    return
        finally:
            chain.free()

    def _next_token(self, chain: Sampler) -> int:
        """Evaluate what is pending and sample the next token (:mod:`llmos.cpu.batch` batches this step)."""
        self._evaluate_pending()
        started = time.perf_counter()
        token = chain.sample(self._ctx, -1)
        self.counters.sample_seconds += time.perf_counter() - started
        return token

    def _force(self, markup: str) -> Iterator[Piece]:
        for token in self.tokenize(markup, special=True) if markup else []:
            self.tokens.append(token)
            self.counters.context_tokens += 1
            yield Piece(token, self.piece(token).decode("utf-8", "replace"), self.is_control(token))

    # ---------------------------------------------------------------- state (swap)
    def save_state(self) -> bytes:
        """The KV state of the sequence (``llama_state_seq_get_data``)."""
        self._evaluate_pending()
        size = self.lib.llama_state_seq_get_size(self._ctx, self.seq)
        buffer = (ctypes.c_uint8 * size)()
        written = self.lib.llama_state_seq_get_data(self._ctx, buffer, size, self.seq)
        return ctypes.string_at(buffer, written)  # one copy: slicing a ctypes array builds a list

    def restore_state(self, data: bytes, tokens: Sequence[int]) -> None:
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        self.lib.llama_memory_seq_rm(self._memory, self.seq, -1, -1)
        if not self.lib.llama_state_seq_set_data(self._ctx, buffer, len(data), self.seq):
            raise CPUError("llama_state_seq_set_data failed")
        self.tokens = list(tokens)
        self.n_evaluated = len(tokens)
        self._logits_ready = False

    def save_span(self, start: int, end: int) -> bytes:
        """The KV cells of context positions ``[start, end)``, as llama.cpp serialises a sequence.

        They are copied into the scratch sequence and saved from there, so the saved state
        holds that span alone (with its positions); see :meth:`restore_span`.
        """
        self._evaluate_pending()
        lib, memory, scratch = self.lib, self._memory, self.scratch
        lib.llama_memory_seq_rm(memory, scratch, -1, -1)
        lib.llama_memory_seq_cp(memory, self.seq, scratch, start, end)
        size = lib.llama_state_seq_get_size(self._ctx, scratch)
        buffer = (ctypes.c_uint8 * size)()
        written = lib.llama_state_seq_get_data(self._ctx, buffer, size, scratch)
        lib.llama_memory_seq_rm(memory, scratch, -1, -1)
        return ctypes.string_at(buffer, written)  # one copy: slicing a ctypes array builds a list

    def restore_span(self, data: bytes, tokens: Sequence[int], saved_start: int) -> None:
        """Append a span saved by :meth:`save_span` at the end of the context instead of evaluating it.

        The cells are restored into the scratch sequence, moved to the end positions and
        handed to sequence 0. Their keys and values were computed under the prefix they
        had when saved: exact when that prefix is unchanged, an approximation otherwise.
        """
        self._evaluate_pending()
        lib, memory, scratch = self.lib, self._memory, self.scratch
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        lib.llama_memory_seq_rm(memory, scratch, -1, -1)
        if not lib.llama_state_seq_set_data(self._ctx, buffer, len(data), scratch):
            raise CPUError("llama_state_seq_set_data refused the saved span")
        delta = self.n_evaluated - saved_start
        if delta:
            lib.llama_memory_seq_add(memory, scratch, -1, -1, delta)
        lib.llama_memory_seq_cp(memory, scratch, self.seq, self.n_evaluated, self.n_evaluated + len(tokens))
        lib.llama_memory_seq_rm(memory, scratch, -1, -1)
        self.tokens.extend(tokens)
        self.n_evaluated += len(tokens)
        self._logits_ready = False

    def _apply_lora(self, path: Path):
        """Load a LoRA adapter GGUF over the model and enable it (scale 1) in this context."""
        lib = self.lib
        adapter = lib.llama_adapter_lora_init(self._model, str(path).encode()) if path.is_file() else None
        adapters = (lib.llama_adapter_lora_p_ctypes * 1)(adapter)
        if adapter and not lib.llama_set_adapters_lora(self._ctx, adapters, 1, (ctypes.c_float * 1)(1.0)):
            return adapter
        if adapter:
            lib.llama_adapter_lora_free(adapter)
        lib.llama_free(self._ctx)
        lib.llama_model_free(self._model)
        self._ctx = None  # nothing left for close()
        raise CPUError(
            f"llama.cpp could not apply the LoRA adapter {path} to {self.path} (missing, or not for this model)"
        )

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self.lib.llama_batch_free(self._batch)
            self.lib.llama_free(self._ctx)
            if self._lora:
                self.lib.llama_adapter_lora_free(self._lora)
            self.lib.llama_model_free(self._model)
            self._ctx = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
