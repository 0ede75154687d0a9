"""Does a llmos-tiny checkpoint copy? Two teacher-forced probes, no kernel, no llama.cpp.

Contract: :func:`probe` loads ``DIR/checkpoint.pt`` and ``DIR/tokenizer.json`` and
returns a dict:

- ``induction``: for context lengths 600, 1500 and 3000, the share of tokens predicted
  right when an 8-token span of random tokens (the drill's alphabet) recurs at the end
  of the row, after its first token. A model with working induction heads scores near
  1 at every length; one that memorised a short-range trick scores near 0 past the
  lengths it was drilled on.
- ``copyable_digits`` / ``copyable_names``: accuracy on held-out curriculum targets
  that continue a bigram the model read (:func:`llmos_tiny.model.copies_context`) and
  are a digit, or a letters-only token outside the 300 commonest assistant tokens
  (the inner pieces of names). These are what the benchmark's ``args_right`` and
  ``answer_right`` need; guessing gives about 0.35 and 0.25.
- ``other``: accuracy on every other trained target (the formats).
- ``table``: on held-out valuation transcripts, accuracy on the targets the demo's
  checks depend on: in the calculator's ratio expression, the first token of each
  ``valuation/amount`` pair (``pair_start``: which round with both figures comes next)
  and the figures' other letters and digits (``expression``); every token of the python
  cell (``cell``: it reads the table with ``page_tables()``, so it is mostly format); and
  the closing summary (``summary``). A company fails on one wrong target, so
  ``valuation_success`` needs these near 1.

Why it exists: ``benchmarks/tiny_eval.py`` says whether the model does its tasks; this
says why not, in a minute, for a checkpoint in the middle of a run.

Not covered: sampling (greedy only), the first token of a copy (found by content, not
by induction), the kernel's tokenization of pages (the curriculum's is the same).
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import torch

from llmos_tiny import curriculum
from llmos_tiny.model import Config, Tiny, copies_context
from llmos_tiny.tokenizer import Tokenizer
from llmos_tiny.train import draw, encode_conversation

LENGTHS = (600, 1500, 3000)
HELD_OUT_SEED = 1_000_003  # the build's held-out conversations


def load(folder: str | Path) -> tuple[Tiny, Tokenizer, int]:
    state = torch.load(Path(folder) / "checkpoint.pt", weights_only=False, map_location="cpu")
    model = Tiny(Config(**state["config"]))
    model.load_state_dict(state["model"])
    model.eval()
    return model, Tokenizer.load(Path(folder) / "tokenizer.json"), state["step"]


@torch.no_grad()
def induction(model: Tiny, ordinary: int, length: int, rows: int = 3, span: int = 8) -> float:
    rng = random.Random(7)
    length = min(length, model.config.n_ctx)
    lines = []
    for _ in range(rows):
        repeat = [draw(rng, ordinary) for _ in range(span)]
        before = [draw(rng, ordinary) for _ in range(length // 2)]
        between = [draw(rng, ordinary) for _ in range(length - len(before) - 2 * span)]
        lines.append([*before, *repeat, *between, *repeat])
    predicted = model(torch.tensor(lines)).argmax(-1)
    start = length - span + 1  # the second token of the recurrence on
    right = (predicted[:, start - 1 : length - 1] == torch.tensor(lines)[:, start:]).float()
    return round(float(right.mean()), 3)


@torch.no_grad()
def curriculum_copying(model: Tiny, tokenizer: Tokenizer, n: int = 30, max_len: int = 3800) -> dict[str, float]:
    common = _common_tokens(tokenizer)
    counts: dict[str, list[int]] = {"copyable_digits": [0, 0], "copyable_names": [0, 0], "other": [0, 0]}
    for turns in curriculum.conversations(n, seed=HELD_OUT_SEED):
        ids, mask = encode_conversation(turns, tokenizer)
        if len(ids) > min(max_len, model.config.n_ctx):
            continue
        tokens, trained = torch.tensor([ids]), torch.tensor([mask])
        right = (model(tokens)[0, :-1].argmax(-1) == tokens[0, 1:]).tolist()
        copyable = copies_context(tokens, trained)[0].tolist()
        for i, ok in enumerate(right):
            if mask[i + 1]:
                kind = _kind(tokenizer, ids[i + 1], common) if copyable[i] else "other"
                if kind:
                    counts[kind][0] += ok
                    counts[kind][1] += 1
    return {kind: round(hits / max(total, 1), 3) for kind, (hits, total) in counts.items()}


KINDS = ("expression", "pair_start", "cell", "summary")
CODE, PYTHON_DONE = '"code": "', "files: valuations.csv, valuations.png<|/page|>"


@torch.no_grad()
def table_copying(model: Tiny, tokenizer: Tokenizer, n: int = 12) -> dict[str, float]:
    from llmos.dialects.base import Turn
    from llmos.dialects.llmos import DEFAULT_SYSTEM
    from llmos_tiny.world import World, tool_specs

    rng = random.Random(HELD_OUT_SEED)
    counts: Counter[str] = Counter()
    with World() as world:
        for _ in range(n):
            world.reset()
            system = Turn("system", DEFAULT_SYSTEM, meta={"tools": tool_specs(curriculum.DEMO_TOOLS)})
            ids, mask = encode_conversation([system, *curriculum.valuation(rng, world)], tokenizer)
            if len(ids) > model.config.n_ctx:
                continue
            predicted = model(torch.tensor([ids]))[0, :-1].argmax(-1).tolist()
            pieces = [tokenizer.decode([t]) for t in ids]
            text = "".join(pieces)
            offset = 0
            for i, piece in enumerate(pieces):
                kind = _table_kind(text[:offset], piece) if i and mask[i] else None
                offset += len(piece)
                if kind:
                    counts[kind + "_n"] += 1
                    counts[kind] += predicted[i - 1] == ids[i]
    return {kind: round(counts[kind] / max(1, counts[kind + "_n"]), 3) for kind in KINDS}


def _table_kind(before: str, piece: str) -> str | None:
    """What the target ``piece``, after the text ``before``, is in a valuation transcript, if it matters."""
    expression = before.rfind('"expression": "')
    if expression >= 0 and '"}}' not in before[expression:]:
        if before.endswith(("mean(", ", ")):
            return "pair_start"  # which round with both figures comes next
        return "expression" if any(c.isalnum() for c in piece) else None
    code = before.rfind(CODE)
    if code >= 0 and "<|/call|>" not in before[code:]:
        return "cell"
    done = before.rfind(PYTHON_DONE)
    if done >= 0 and "<|" not in before[done + len(PYTHON_DONE) :]:
        return "summary"
    return None


def _kind(tokenizer: Tokenizer, token: int, common: set[int]) -> str | None:
    text = tokenizer.decode([token]).strip()
    if text.isdigit():
        return "copyable_digits"
    if text.isalpha() and token not in common:
        return "copyable_names"
    return None


def _common_tokens(tokenizer: Tokenizer, top: int = 300) -> set[int]:
    counts: Counter[int] = Counter()
    for turns in curriculum.conversations(200, seed=5):
        ids, mask = encode_conversation(turns, tokenizer)
        counts.update(t for t, m in zip(ids, mask, strict=True) if m)
    return {t for t, _ in counts.most_common(top)}


def probe(folder: str | Path, n: int = 30) -> dict:
    model, tokenizer, step = load(folder)
    return {
        "step": step,
        "induction": {str(length): induction(model, tokenizer.n_normal, length) for length in LENGTHS},
        **curriculum_copying(model, tokenizer, n),
        "table": table_copying(model, tokenizer),
    }
