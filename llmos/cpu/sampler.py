"""llama.cpp sampling for :class:`~llmos.cpu.llama.LlamaCPU`: a sampler chain, and a grammar kept apart.

The chain (repetition penalty, DRY, then greedy or top-k, top-p, temperature and a seeded draw) picks
a token from the model's logits; the grammar, when there is one, then checks that single token, and
only a token it rejects pays for the grammar over the whole vocabulary, after which the chain picks
again among the tokens the grammar allows (llama.cpp's own ``common_sampler`` works this way). The
grammar over SmolLM2's 49,152 tokens took about 5.7 ms a token, against 8-10 ms for decoding it on
two cores; ``benchmarks/call_grammar.py`` measures what is left of that cost.

What this changes against a chain with the grammar first: nothing for greedy decoding (the chain's
best token, when the grammar allows it, is also the best allowed one); for a seeded draw, a draw
from the whole distribution kept when allowed and redrawn from the allowed tokens otherwise is a
draw from the allowed tokens alone, except that top-k and top-p cut the whole vocabulary first.

A lazy grammar (``trigger``: a control token id) allows everything until the model writes the
trigger, then holds from the token after it on (``llama_sampler_init_grammar_lazy_patterns``).
Until then the check of the chosen token passes at once: prose decodes at the speed it has without
a grammar (``grammar_prose_ratio``).
While the grammar holds, the vocabulary's control tokens other than end of generation are refused
as well (``controls``): llama.cpp's grammar reads a control token by its text, and llmos-smol wrote
``<repo_name>`` inside a python cell's string, then prose and a new call marker. And while it holds,
the chain picks without DRY (``Sampling.dry_multiplier``): DRY is there to break greedy loops in
prose, but code and JSON repeat by nature (``df["a"] = df.a.map(money)`` and the next line), and
JSON-escaped newlines and quotes are not DRY's sequence breakers, so inside a call DRY pushed the
model off the very lines it had learned.
Text triggers (llama.cpp's trigger patterns, for markers such as hermes's ``<tool_call>`` that
are several tokens of text) are not offered: llama.cpp feeds the grammar the whole token that
completes the pattern, and a character there the grammar refuses throws a C++ exception through
the C API, which aborts the process.

Not covered: grammars that name control tokens (this llama.cpp's token elements reject every
token), several grammars at once, sampler chains shared between threads.
"""

from __future__ import annotations

import ctypes
import dataclasses
import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np  # comes with llama-cpp-python

from llmos.cpu.base import CPUError, Sampling

DRY_BREAKERS = (b"\n", b":", b'"', b"*")  # where a repeat ends for DRY (llama.cpp's defaults)
DRY_LAST_N = 4096  # tokens DRY looks back over: -1 ("the whole context") left it inert in this llama.cpp (measured)
TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])  # llama_token_data, 12 bytes


class Sampler:
    """One generation's sampling state: ``sample`` a token, then ``free`` (the C objects are not
    garbage collected)."""

    def __init__(
        self,
        lib: Any,
        vocab: Any,
        n_vocab: int,
        sampling: Sampling,
        seed: int,
        trigger: int | None,
        controls: Sequence[int] = (),
    ) -> None:
        self.lib, self.n_vocab, self.trigger = lib, n_vocab, trigger
        self.grammar = _grammar(lib, vocab, sampling, trigger) if sampling.grammar else None
        self.chain = _chain(lib, vocab, n_vocab, sampling, seed)
        self.call_chain = self.chain  # the chain while the grammar holds: the same one, less DRY
        if self.grammar is not None and sampling.dry_multiplier > 0:
            self.call_chain = _chain(lib, vocab, n_vocab, dataclasses.replace(sampling, dry_multiplier=0.0), seed)
        self.held = self.grammar is not None and trigger is None  # whether the grammar holds yet
        if self.grammar is not None:
            self._ids = np.arange(n_vocab, dtype=np.int32)
            self._data = np.zeros(n_vocab, dtype=TOKEN_DATA)
            self._one = np.zeros(1, dtype=TOKEN_DATA)
            self._controls = np.asarray(controls, dtype=np.int32)
            self._control_set = frozenset(int(t) for t in self._controls)

    def sample(self, ctx: Any, index: int) -> int:
        """The next token from the logits of batch position ``index`` (-1: the last), accepted by
        every sampler (penalties and DRY remember it, a grammar advances over it)."""
        if self.grammar is None:
            return int(self.lib.llama_sampler_sample(self.chain, ctx, index))
        token = self._pick(self._logits(ctx, index), constrained=False)
        if not self.allowed(token):
            token = self._pick(self._logits(ctx, index), constrained=True)
        self.accept(token)
        return token

    def accept(self, token: int) -> None:
        """Advance every sampler over ``token``; the grammar only over a token it allows (a refused
        one throws in llama.cpp, which aborts the process)."""
        if self.grammar is not None:
            self.lib.llama_sampler_accept(self.grammar, token)
            self.held = self.held or token == self.trigger
        self.lib.llama_sampler_accept(self.chain, token)
        if self.call_chain is not self.chain:
            self.lib.llama_sampler_accept(self.call_chain, token)

    def allowed(self, token: int) -> bool:
        """Whether the grammar lets ``token`` come next. While it holds, the control tokens passed
        in (the vocabulary's, end of generation aside) never do: llama.cpp's grammar reads a control
        token as its text, so ``<repo_name>`` would pass for a string's characters."""
        if self.held and token in self._control_set:
            return False
        one = self._one
        one[0] = (token, 0.0, 0.0)
        self.lib.llama_sampler_apply(self.grammar, ctypes.byref(self._candidates(one)))
        return bool(np.isfinite(one[0]["logit"]))

    def _candidates(self, data: np.ndarray) -> Any:
        pointer = data.ctypes.data_as(ctypes.POINTER(self.lib.llama_token_data))
        return self.lib.llama_token_data_array(pointer, len(data), -1, False)

    def _logits(self, ctx: Any, index: int) -> np.ndarray:
        logits = self.lib.llama_get_logits_ith(ctx, index)
        if not logits:
            raise CPUError(f"llama.cpp has no logits at batch position {index}")
        return np.ctypeslib.as_array(logits, shape=(self.n_vocab,))

    def _pick(self, logits: np.ndarray, constrained: bool) -> int:
        """The chain's choice over the whole vocabulary, or over what the grammar allows."""
        data = self._data
        data["id"] = self._ids
        data["logit"] = logits
        data["p"] = 0.0
        candidates = self._candidates(data)
        if constrained:
            if self.held:
                data["logit"][self._controls] = -np.inf
            self.lib.llama_sampler_apply(self.grammar, ctypes.byref(candidates))
        self.lib.llama_sampler_apply(self.call_chain if self.held else self.chain, ctypes.byref(candidates))
        if candidates.selected < 0:
            raise CPUError("llama.cpp's sampler chain selected no token")
        return int(candidates.data[candidates.selected].id)

    def free(self) -> None:
        for sampler in {id(s): s for s in (self.chain, self.call_chain, self.grammar) if s is not None}.values():
            self.lib.llama_sampler_free(sampler)
        self.chain = self.call_chain = self.grammar = None


def _grammar(lib: Any, vocab: Any, sampling: Sampling, trigger: int | None) -> Any:
    text = (sampling.grammar or "").encode()
    if trigger is None:
        grammar = lib.llama_sampler_init_grammar(vocab, text, b"root")
    else:
        triggers = (lib.llama_token * 1)(trigger)
        grammar = lib.llama_sampler_init_grammar_lazy_patterns(vocab, text, b"root", None, 0, triggers, 1)
    if not grammar:
        raise CPUError("llama.cpp rejected the GBNF grammar")
    return grammar


def _chain(lib: Any, vocab: Any, n_vocab: int, sampling: Sampling, seed: int) -> Any:
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    if sampling.repeat_penalty != 1.0:
        lib.llama_sampler_chain_add(chain, _penalties(lib, n_vocab, sampling.repeat_penalty))
    if sampling.dry_multiplier > 0:
        lib.llama_sampler_chain_add(chain, _dry(lib, vocab, sampling))
    if sampling.temperature <= 0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        return chain
    if sampling.top_k > 0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(sampling.top_k))
    if sampling.top_p < 1.0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(sampling.top_p, 1))
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(sampling.temperature))
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(sampling.seed or seed))
    return chain


def _penalties(lib: Any, n_vocab: int, repeat: float) -> Any:
    """The repetition penalty over the last 64 tokens. The bindings of llama-cpp-python 0.3.x
    take the vocabulary size first; llama.cpp's own header dropped it: both are served."""
    init = lib.llama_sampler_init_penalties
    args: tuple[float, ...] = (64, repeat, 0.0, 0.0)
    if len(inspect.signature(init).parameters) == 5:
        args = (n_vocab, *args)
    return init(*args)


def _dry(lib: Any, vocab: Any, sampling: Sampling) -> Any:
    """llama.cpp's DRY sampler over everything this chain has sampled (llama.cpp's defaults for
    the base and the sequence breakers; it copies the breakers, so the array may go after init)."""
    breakers = (ctypes.c_char_p * len(DRY_BREAKERS))(*DRY_BREAKERS)
    multiplier, allowed = sampling.dry_multiplier, sampling.dry_allowed_length
    return lib.llama_sampler_init_dry(vocab, multiplier, 1.75, allowed, DRY_LAST_N, breakers, len(DRY_BREAKERS))
