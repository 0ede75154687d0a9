"""Training llmos-tiny: tokenized curriculum in, checkpoints and a loss curve out.

Contract: :func:`encode_dataset` turns conversations into ``(tokens, loss_mask)``
pairs, tokenizing each rendered segment as the kernel would (special parsing only
for markup and the model's own chunks) and masking everything but assistant tokens.
:func:`train` runs AdamW with warmup and cosine decay on batches of conversations of
similar length (padding is masked out), saves ``checkpoint.pt`` every
``save_every`` steps and at the end, resumes from it when present, and draws
``loss.png``. Deterministic for a seed on one machine and thread count.

The first ``copy_steps`` steps can be a copy drill (:func:`copy_batches`: long rows
of random tokens in which spans occur twice, loss only on the second occurrence);
``copy_every`` mixes drill batches in afterwards, and ``copy_weight`` weighs the
curriculum's copyable targets more. Why: a small model trained on tool-use
transcripts learns the formats long before it copies a name or a figure out of its
context (it guesses). The drill alone never made the model copy (measured, default
size, 2 cores; docs/llmos-tiny.md): induction does not form from a random start in the
CPU budget. With ``plant_induction`` the model starts from a written-in induction
circuit (:mod:`llmos_tiny.circuits`) and the drill keeps it in use while the
curriculum trains; that is the bundled recipe (``python -m llmos_tiny build``).

With ``device="cuda"`` the same loop runs on a GPU (bf16 autocast there too); a run is
then deterministic only up to the GPU's kernels, and its checkpoints load on a CPU.

Not covered: distributed or multi-GPU training, evaluation beyond held-out loss,
gradient accumulation.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch

from llmos.dialects.base import Turn
from llmos_tiny.circuits import plant_induction
from llmos_tiny.curriculum import segments
from llmos_tiny.model import Config, Tiny
from llmos_tiny.tokenizer import Tokenizer

# (tokens, loss mask) per conversation: lists of ints when encoded, 1-D tensors from data.pt
Examples = list[tuple[Any, Any]]


@dataclass
class TrainSettings:
    steps: int = 1000
    batch_size: int = 16
    batch_tokens: int = 0  # see batches()
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    copy_steps: int = 0  # the first steps train on copy_batches() instead of the curriculum
    copy_every: int = 0  # after the warm-up, every copy_every-th step is a copy batch too (0: none)
    copy_weight: float = 1.0  # curriculum targets that copy the context weigh this much (model.copies_context)
    copy_rows: int = 4
    copy_length: int = 2048
    ordinary_tokens: int = 0  # ids below this are text, not special tokens (0: every id is text)
    plant_induction: bool = False  # start from circuits.plant_induction (config.rope_theta must suit it)
    init_weights: dict | None = None  # a state dict to start from (a fine-tune); a resumed run ignores it
    bf16: bool = False  # autocast matmuls and attention to bfloat16 (weights and optimizer stay float32)
    device: str = "cpu"  # "cuda" trains on a GPU; checkpoints load anywhere
    weight_decay: float = 0.05
    save_every: int = 100
    eval_every: int = 0  # held-out loss every this many steps and at the end (0: at every save)
    max_seconds: float = 0.0  # stop (and save) after this long; 0 means no limit
    seed: int = 0
    log: list[dict] = field(default_factory=list)


def encode_conversation(turns: list[Turn], tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    tokens: list[int] = []
    mask: list[int] = []
    for text, special, train in segments(turns):
        ids = tokenizer.encode(text, special=special)
        tokens += ids
        mask += [int(train)] * len(ids)
    return tokens, mask


def encode_dataset(conversations: list[list[Turn]], tokenizer: Tokenizer, n_ctx: int) -> Examples:
    data = [encode_conversation(turns, tokenizer) for turns in conversations]
    return [(t, m) for t, m in data if len(t) <= n_ctx]


def save_dataset(path: Path, key: dict, parts: dict[str, Examples]) -> None:
    """Keep encoded datasets (flat int16 tokens, bool masks) so a resumed build skips the curriculum.

    Why: encoding is a minute here, and a GPU machine that has torch but not the
    apps the curriculum runs through can still train from the folder.
    """
    flat = {}
    for name, data in parts.items():
        flat[name] = {
            "lengths": torch.tensor([len(t) for t, _ in data], dtype=torch.int32),
            "tokens": torch.tensor([x for t, _ in data for x in t], dtype=torch.int16),
            "mask": torch.tensor([x for _, m in data for x in m], dtype=torch.bool),
        }
    torch.save({"key": key, "parts": flat}, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


def load_dataset(path: Path, key: dict) -> dict[str, Examples] | None:
    """The datasets :func:`save_dataset` kept under this ``key``, or None (no file, other settings)."""
    if not path.exists():
        return None
    saved = torch.load(path, weights_only=True)
    if saved["key"] != key:
        return None
    parts = {}
    for name, flat in saved["parts"].items():
        lengths = flat["lengths"].tolist()
        tokens, mask = flat["tokens"].long().split(lengths), flat["mask"].long().split(lengths)
        parts[name] = list(zip(tokens, mask, strict=True))
    return parts


def batches(data: Examples, batch_size: int, rng: random.Random, batch_tokens: int = 0):
    """Endless batches of conversations of similar length, as (tokens, mask) tensors.

    With ``batch_tokens``, a batch holds as many conversations as fit that many (padded)
    tokens, at least ``batch_size``: a step costs about the same whatever the length, and
    short tasks come many at a time.
    """
    ordered = sorted(data, key=lambda item: len(item[0]))
    while True:
        start = rng.randrange(max(1, len(ordered) - batch_size + 1))
        count = batch_size
        while (
            batch_tokens
            and start + count < len(ordered)
            and (count + 1) * len(ordered[start + count][0]) <= batch_tokens
        ):
            count += 1
        chosen = ordered[start : start + count]
        width = max(len(t) for t, _ in chosen)
        tokens = torch.zeros(len(chosen), width, dtype=torch.long)
        mask = torch.zeros(len(chosen), width, dtype=torch.long)
        for row, (t, m) in enumerate(chosen):
            tokens[row, : len(t)] = torch.as_tensor(t)
            mask[row, : len(m)] = torch.as_tensor(m)
        yield tokens, mask


def copy_batches(ordinary: int, rows: int, length: int, rng: random.Random, spans: int = 0):
    """Endless (tokens, mask) batches of the copy drill.

    Each row is ``length`` random tokens (:func:`draw`, never special tokens) in which
    ``spans`` spans of 4-24 tokens each (0: enough to fill about half of the second
    half, so targets are dense) appear twice: once in the first half, once
    more, in another order, in the second. The loss covers the second occurrence
    after its first token (which nothing announces), so the only way down is to find
    the earlier occurrence of the current token and copy what followed it: an
    induction head, at the distances a transcript has.
    Why this layout: an earlier one (short rows of 130 tokens, the repeat right after
    a separator byte) was learned to 0.91 accuracy, yet the model copied at 0.04 in
    rows of 600 tokens and at 0.15 without the separator: it had learned a
    separator-triggered, short-range trick, and the curriculum never used it.
    """
    spans = spans or max(1, length // 56)
    while True:
        tokens = torch.zeros(rows, length, dtype=torch.long)
        mask = torch.zeros(rows, length, dtype=torch.long)
        for row in range(rows):
            line, targets = _induction_row(ordinary, length, rng, spans)
            tokens[row] = torch.tensor(line)
            mask[row, targets] = 1
        yield tokens, mask


def _induction_row(ordinary: int, length: int, rng: random.Random, spans: int) -> tuple[list[int], list[int]]:
    repeats = [[draw(rng, ordinary) for _ in range(rng.randint(4, 24))] for _ in range(spans)]
    half = length // 2
    line: list[int] = []
    targets: list[int] = []
    for phase, order in enumerate((repeats, rng.sample(repeats, len(repeats)))):
        room = half - sum(map(len, order))  # filler tokens to spread over this half
        cuts = sorted(rng.randint(0, max(room, 0)) for _ in order)
        for gap, span in zip([cuts[0], *(b - a for a, b in pairwise(cuts))], order, strict=True):
            line += [draw(rng, ordinary) for _ in range(gap)]
            if phase:
                targets += range(len(line) + 1, len(line) + len(span))
            line += span
        line += [draw(rng, ordinary) for _ in range((phase + 1) * half - len(line))]
    line += [draw(rng, ordinary) for _ in range(length - len(line))]
    return line[:length], [t for t in targets if t < length]


DIGITS = tuple(range(ord("0"), ord("9") + 1))  # byte tokens: merges never touch digits


def draw(rng: random.Random, ordinary: int) -> int:
    """A drill token: a digit one time in four (figures are most of what gets copied), else a merged token."""
    return rng.choice(DIGITS) if rng.random() < 0.25 else rng.randrange(256, ordinary)


def learning_rate(step: int, s: TrainSettings) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def evaluate(model: Tiny, data: Examples, batch_size: int = 16) -> float:
    rng = random.Random(0)
    stream = batches(data, batch_size, rng)
    device = next(model.parameters()).device
    with torch.no_grad():
        losses = [
            float(model.loss(*(part.to(device) for part in next(stream))))
            for _ in range(max(1, min(8, len(data) // batch_size)))
        ]
    return sum(losses) / len(losses)


def train(
    config: Config,
    data: Examples,
    held_out: Examples,
    settings: TrainSettings,
    out: Path,
    say=print,
) -> Tiny:
    out.mkdir(parents=True, exist_ok=True)
    model = Tiny(config, seed=settings.seed)
    if settings.init_weights is not None:
        model.load_state_dict(settings.init_weights)
    elif settings.plant_induction:
        plant_induction(model, seed=settings.seed)
    model.to(settings.device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, betas=(0.9, 0.95), weight_decay=settings.weight_decay
    )
    step, log, checkpoint = 0, settings.log, out / "checkpoint.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False, map_location=settings.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, log[:] = state["step"], state["log"]
        say(f"resumed from step {step}")
    rng = random.Random(settings.seed * 1000 + step)  # a resumed run draws fresh batches
    stream = batches(data, settings.batch_size, rng, settings.batch_tokens)
    ordinary = settings.ordinary_tokens or config.vocab_size
    drills = copy_batches(ordinary, settings.copy_rows, min(settings.copy_length, config.n_ctx), rng)
    started = time.time()
    while step < settings.steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, settings)
        drill = step < settings.copy_steps or (settings.copy_every and step % settings.copy_every == 0)
        tokens, mask = (part.to(settings.device) for part in next(drills if drill else stream))
        # bf16 autocast: 1.4x faster steps on the 2-core CPU, the same probe figures (docs/llmos-tiny.md)
        with torch.autocast(torch.device(settings.device).type, dtype=torch.bfloat16, enabled=settings.bf16):
            loss = model.loss(tokens, mask, 1.0 if drill else settings.copy_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        entry: dict[str, Any] = {
            "step": step,
            "loss": round(loss.item(), 4),
            "seconds": round(time.time() - started, 1),
        }
        entry["device"] = settings.device
        if drill:
            entry["phase"] = "copy"
        last = step == settings.steps or (settings.max_seconds and time.time() - started > settings.max_seconds)
        if step % (settings.eval_every or settings.save_every) == 0 or last:
            entry["held_out"] = round(evaluate(model, held_out), 4)
        if step % settings.save_every == 0 or last:
            say(json.dumps(entry))
        log.append(entry)
        if step % settings.save_every == 0 or last:
            save_checkpoint(model, optimizer, step, log, checkpoint)
        if last:
            break
    plot_losses(log, out / "loss.png")
    return model.cpu()  # export and parity run on the CPU


def training_time(log: list[dict]) -> tuple[float, list[str]]:
    """Seconds spent training over every resumed session of a log, and the devices that trained it."""
    total, last = 0.0, 0.0
    for entry in log:
        if entry["seconds"] < last:  # a resumed session starts its clock again
            total += last
        last = entry["seconds"]
    return round(total + last, 1), sorted({entry.get("device", "cpu") for entry in log})


def save_checkpoint(model: Tiny, optimizer, step: int, log: list[dict], path: Path) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "log": log,
        "config": model.config.as_dict(),
    }
    torch.save(state, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)  # never leave a half-written checkpoint


def plot_losses(log: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    drill = [e for e in log if e.get("phase") == "copy"]
    tasks = [e for e in log if e.get("phase") != "copy"]
    if drill:
        ax.plot([e["step"] for e in drill], [e["loss"] for e in drill], lw=0.8, label="copy drill (recurring spans)")
    ax.plot([e["step"] for e in tasks], [e["loss"] for e in tasks], lw=0.8, label="train (assistant tokens)")
    held = [e for e in log if "held_out" in e]
    ax.plot([e["step"] for e in held], [e["held_out"] for e in held], "o-", label="held out")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("llmos-tiny training")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
