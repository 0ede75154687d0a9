"""Build llmos-tiny from nothing: curriculum, tokenizer, training, GGUF export, parity check.

Contract: :func:`build` writes into ``out``: ``tokenizer.json``, ``checkpoint.pt``,
``loss.png``, ``llmos-tiny.gguf`` and ``build.json`` (settings and figures). Running
it again resumes training from the checkpoint, with the encoded data kept in
``data.pt`` (so a machine with torch alone, a GPU box, can resume a folder prepared
elsewhere: ``stop_after="data"`` prepares such a folder, ``stop_after="training"``
skips export and parity there). ``init_from`` fine-tunes: training starts from another
build's weights (its ``checkpoint.pt``), with its tokenizer and shape, a fresh optimizer
and schedule, and the curriculum as it is now. :func:`check_parity` runs the same
prompts through PyTorch and llama.cpp and reports the largest next-token logit
difference and whether greedy continuations agree.

Not covered: choosing hyperparameters (the presets in :data:`SIZES` are hand-picked
for a 2-core CPU), publishing the model.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from llmos.dialects.llmos import END
from llmos_tiny import curriculum
from llmos_tiny.circuits import ROPE_THETA
from llmos_tiny.export import export_gguf
from llmos_tiny.model import Config, Tiny
from llmos_tiny.tokenizer import Tokenizer
from llmos_tiny.tokenizer import train as train_tokenizer
from llmos_tiny.train import (
    TrainSettings,
    encode_conversation,
    encode_dataset,
    load_dataset,
    save_dataset,
    train,
    training_time,
)
from llmos_tiny.world import tool_specs as specs_for

# name -> (model shape, vocabulary size, training conversations)
SIZES: dict[str, tuple[dict[str, Any], int, int]] = {
    "test": ({"n_embd": 32, "n_layer": 2, "n_head": 4, "n_ff": 64}, 512, 120),
    "default": ({"n_embd": 128, "n_layer": 4, "n_head": 4, "n_ff": 384, "tie_embeddings": True}, 3072, 16000),
    "large": ({"n_embd": 192, "n_layer": 6, "n_head": 6, "n_ff": 512}, 3072, 16000),
}
MAX_TASKS = 3  # tasks per training conversation (held-out conversations have one)


def build(
    out: str | Path,
    *,
    size: str = "default",
    steps: int = 1000,
    copy_steps: int = 0,
    copy_every: int = 0,
    copy_length: int = 2048,
    copy_weight: float = 1.0,
    split_spaces: bool = False,
    plant: bool = False,
    bf16: bool = False,
    batch_size: int = 16,
    batch_tokens: int = 0,
    lr: float = 3e-3,
    max_seconds: float = 0.0,
    seed: int = 0,
    n_ctx: int = 4096,
    max_len: int = 3600,
    conversations: int = 0,
    device: str = "cpu",
    stop_after: str = "",
    init_from: str | Path = "",
    say=print,
) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parent = _parent_checkpoint(init_from, out) if init_from else None
    shape, vocab_size, n_conversations = SIZES[size]
    n_conversations = conversations or n_conversations
    started = time.time()
    key = {"size": size, "seed": seed, "conversations": n_conversations, "max_tasks": MAX_TASKS, "max_len": max_len}
    tokenizer_path, data_path = out / "tokenizer.json", out / "data.pt"
    cached = load_dataset(data_path, key) if tokenizer_path.exists() else None
    if cached:  # resuming: the same data, and the checkpoint's embedding rows belong to this vocabulary
        tokenizer, data, held = Tokenizer.load(tokenizer_path), cached["train"], cached["held_out"]
    else:
        tokenizer, data, held = _prepare(tokenizer_path, key, vocab_size, split_spaces, say, started)
        save_dataset(data_path, key, {"train": data, "held_out": held})
    n_tokens = sum(len(t) for t, _ in data)
    say(f"data: {len(data)} conversations, {n_tokens} tokens ({time.time() - started:.0f}s)")
    if stop_after == "data":  # a folder to train elsewhere (a GPU box with torch alone)
        return {"data": str(data_path), "conversations": n_conversations, "train_tokens": n_tokens}
    config = Config(vocab_size=len(tokenizer), n_ctx=n_ctx, **shape)
    if parent:  # the parent's shape, context and rotary base: its weights are the start
        config, plant = Config(**parent["config"]), False
    elif plant:  # the planted match rides on rotary pairs that must barely turn over a context
        config.rope_theta = ROPE_THETA
    settings = TrainSettings(
        steps=steps,
        copy_steps=copy_steps,
        copy_every=copy_every,
        copy_length=copy_length,
        copy_rows=max(1, 8192 // copy_length),  # a drill batch holds about 8,192 tokens whatever its rows' length
        copy_weight=copy_weight,
        plant_induction=plant,
        bf16=bf16,
        device=device,
        ordinary_tokens=tokenizer.n_normal,
        batch_size=batch_size,
        batch_tokens=batch_tokens,
        lr=lr,
        max_seconds=max_seconds,
        seed=seed,
        save_every=max(1, min(100, steps // 5)),
        eval_every=max(1, min(100, steps // 5), steps // 10),  # a held-out pass costs ~15 training steps
        warmup=max(1, min(50, steps // 10)),
        init_weights=parent["model"] if parent else None,
    )
    model = train(config, data, held, settings, out, say=say)
    train_seconds, devices = training_time(settings.log)
    if stop_after == "training":  # export and parity where gguf and llama.cpp are installed
        return {"checkpoint": str(out / "checkpoint.pt"), "train_seconds": train_seconds, "trained_on": devices}
    model.eval()
    gguf_path = export_gguf(model, tokenizer, out / "llmos-tiny.gguf")
    report = {
        "size": size,
        "config": config.as_dict(),
        "parameters": model.n_params(),
        "steps": settings.log[-1]["step"] if settings.log else 0,
        "copy_steps": copy_steps,
        "copy_every": copy_every,
        "copy_length": copy_length,
        "copy_weight": copy_weight,
        "split_spaces": split_spaces,
        "plant_induction": plant,
        "init_from": {"checkpoint": str(parent["path"]), "steps": parent["step"]} if parent else None,
        "bf16": bf16,
        "batch_tokens": batch_tokens,
        "first_loss": next((e["loss"] for e in settings.log if e.get("phase") != "copy"), None),
        "final_loss": settings.log[-1]["loss"] if settings.log else None,
        "held_out_loss": next((e["held_out"] for e in reversed(settings.log) if "held_out" in e), None),
        "conversations": n_conversations,
        "train_tokens": n_tokens,
        "seconds": round(time.time() - started, 1),
        "train_seconds": train_seconds,
        "trained_on": devices,
        "gguf": str(gguf_path),
        "gguf_bytes": gguf_path.stat().st_size,
    }
    (out / "build.json").write_text(json.dumps(report, indent=2))
    say(json.dumps(report))
    return report


def _parent_checkpoint(init_from: str | Path, out: Path) -> dict[str, Any]:
    """The checkpoint a fine-tune starts from (a build folder or its ``checkpoint.pt``); its
    tokenizer is copied into ``out``, since the weights' embedding rows belong to it."""
    path = Path(init_from)
    path = path / "checkpoint.pt" if path.is_dir() else path
    tokenizer = path.parent / "tokenizer.json"
    if not path.is_file() or not tokenizer.is_file():
        raise FileNotFoundError(f"--init-from needs a build's checkpoint.pt and tokenizer.json: {path}")
    if not (out / "tokenizer.json").exists():
        shutil.copyfile(tokenizer, out / "tokenizer.json")
    elif Tokenizer.load(out / "tokenizer.json").vocab != Tokenizer.load(tokenizer).vocab:
        raise ValueError(f"{out} has another tokenizer than {tokenizer}: fine-tune into a new folder")
    state = torch.load(path, weights_only=False, map_location="cpu")
    return {"path": path, "model": state["model"], "config": state["config"], "step": state["step"]}


def _prepare(tokenizer_path: Path, key: dict, vocab_size: int, split_spaces: bool, say, started: float):
    """Generate the curriculum, train (or load) the tokenizer, encode training and held-out data."""
    conversations = curriculum.conversations(key["conversations"], seed=key["seed"], max_tasks=MAX_TASKS)
    held_out = curriculum.conversations(max(32, key["conversations"] // 50), seed=key["seed"] + 1_000_003)
    if tokenizer_path.exists():  # resuming: the checkpoint's embedding rows belong to this vocabulary
        tokenizer = Tokenizer.load(tokenizer_path)
    else:
        texts = [curriculum.text(t) for t in conversations[:1500]]
        tokenizer = train_tokenizer(texts, vocab_size, split_spaces=split_spaces)
        tokenizer.save(tokenizer_path)
    say(f"tokenizer: {len(tokenizer)} tokens ({time.time() - started:.0f}s)")
    # the valuation demo (prompt, search results, the funding page, a python cell) is ~2,600 tokens
    data = encode_dataset(conversations, tokenizer, key["max_len"])
    return tokenizer, data, encode_dataset(held_out, tokenizer, key["max_len"])


def prompt_tokens(turns: list, tokenizer: Tokenizer) -> list[int]:
    """A conversation rendered up to the generation prompt, tokenized as the kernel does."""
    from llmos.dialects.llmos import LlmosDialect

    tokens: list[int] = []
    tools = turns[0].meta.get("tools") or specs_for(None)
    for segment in LlmosDialect().render(turns, tools, generate=True):
        tokens += tokenizer.encode(segment.text, special=segment.trusted or segment.tag == "assistant")
    return tokens


def check_parity(
    model: Tiny, tokenizer: Tokenizer, gguf_path: str | Path, prompts: list[list[int]], n_generate: int = 24
) -> dict[str, Any]:
    import numpy as np

    from llmos.cpu.llama import LlamaCPU

    worst, same, end = 0.0, True, tokenizer.special_id(END)
    cpu = LlamaCPU(gguf_path, n_ctx=min(model.config.n_ctx, 2048), n_threads=1)
    try:
        for tokens in prompts:
            cpu.set_tokens([])
            cpu.set_tokens(tokens)
            cpu._evaluate_pending()  # the logits of the last prompt token
            pointer = cpu.lib.llama_get_logits_ith(cpu._ctx, -1)
            theirs = np.ctypeslib.as_array(pointer, shape=(cpu.n_vocab,)).copy()
            with torch.no_grad():
                ours = model(torch.tensor([tokens]))[0, -1].numpy()
            worst = max(worst, float(np.abs(theirs - ours).max()))
            generated = llama_greedy(cpu, n_generate, {end})
            same = same and generated == model.greedy(tokens, n_generate, stop={end})
    finally:
        cpu.close()
    return {"max_logit_diff": worst, "greedy_identical": same}


def llama_greedy(cpu, n: int, stops: set[int]) -> list[int]:
    """Greedy decoding through llama.cpp until a token in ``stops`` (included) or ``n`` tokens.

    llama.cpp (llama-vocab.cpp) marks any token spelled ``<|call|>`` as end of generation
    (a gpt-oss workaround), so :meth:`LlamaCPU.generate` returns after it; decoding
    simply resumes, since the call marker is already in the context.
    """
    from llmos.cpu.base import Sampling

    out: list[int] = []
    while len(out) < n:
        before = len(out)
        for piece in cpu.generate(Sampling(temperature=0.0, max_tokens=n - len(out))):
            out.append(piece.token)
            if piece.token in stops:
                return out
        if len(out) == before:
            break
    return out


def parity_prompts(tokenizer: Tokenizer, n: int = 3, seed: int = 12345) -> list[list[int]]:
    prompts = []
    for turns in curriculum.conversations(n, seed=seed):
        first_user = next(i for i, t in enumerate(turns) if t.role == "user")
        prompts.append(prompt_tokens(turns[: first_user + 1], tokenizer))
    return prompts


def encode(turns: list, tokenizer: Tokenizer) -> list[int]:
    return encode_conversation(turns, tokenizer)[0]
