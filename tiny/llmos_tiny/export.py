"""Export a trained :class:`~llmos_tiny.model.Tiny` and its tokenizer to a llama GGUF.

Contract: :func:`export_gguf` writes a ``llama``-architecture GGUF that llama.cpp loads
as is: float32 tensors (the model is small; exact parity matters more than bytes), a
``gpt2`` byte-level BPE vocabulary with the ``gpt-2`` pre-tokenizer, the llmos special
tokens as control tokens, ``<|end|>`` as end of generation, no BOS, and a Jinja chat
template that renders plain chats in the llmos dialect.

Not covered: quantisation, tool specs in the chat template (the kernel renders the
system prompt itself through :class:`~llmos.dialects.llmos.LlmosDialect`).
"""

from __future__ import annotations

from pathlib import Path

from llmos.dialects.llmos import END
from llmos_tiny.model import Tiny
from llmos_tiny.tokenizer import Tokenizer

NORMAL, CONTROL = 1, 3  # llama.cpp token types

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message.role == 'system' -%}<|system|>{{ message.content }}<|end|>"
    "{%- elif message.role == 'user' -%}<|user|>{{ message.content }}<|end|>"
    "{%- elif message.role == 'assistant' -%}<|assistant|>{{ message.content }}<|end|>"
    "{%- elif message.role == 'tool' -%}<|result|>{{ message.content }}<|/result|>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)

# our tensor names -> GGUF names (per block, then global)
BLOCK_NAMES = {
    "attn_norm.weight": "attn_norm.weight",
    "wq.weight": "attn_q.weight",
    "wk.weight": "attn_k.weight",
    "wv.weight": "attn_v.weight",
    "wo.weight": "attn_output.weight",
    "ffn_norm.weight": "ffn_norm.weight",
    "gate.weight": "ffn_gate.weight",
    "up.weight": "ffn_up.weight",
    "down.weight": "ffn_down.weight",
}
GLOBAL_NAMES = {
    "embed.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "output.weight": "output.weight",
}


def gguf_name(name: str) -> str:
    if name.startswith("blocks."):
        _, index, rest = name.split(".", 2)
        return f"blk.{index}.{BLOCK_NAMES[rest]}"
    return GLOBAL_NAMES[name]


def export_gguf(model: Tiny, tokenizer: Tokenizer, path: str | Path, name: str = "llmos-tiny") -> Path:
    import gguf

    path = Path(path)
    c = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(c.n_ctx)
    writer.add_embedding_length(c.n_embd)
    writer.add_block_count(c.n_layer)
    writer.add_feed_forward_length(c.n_ff)
    writer.add_head_count(c.n_head)
    writer.add_head_count_kv(c.n_head)
    writer.add_rope_dimension_count(c.n_embd // c.n_head)
    writer.add_rope_freq_base(c.rope_theta)
    writer.add_layer_norm_rms_eps(c.norm_eps)
    writer.add_vocab_size(len(tokenizer))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokenizer.vocab)
    writer.add_token_types([NORMAL] * tokenizer.n_normal + [CONTROL] * len(tokenizer.specials))
    writer.add_token_merges([f"{a} {b}" for a, b in tokenizer.merges])
    end = tokenizer.special_id(END)
    writer.add_bos_token_id(end)  # unused (no BOS is added) but llama.cpp wants a valid id
    writer.add_eos_token_id(end)
    writer.add_eot_token_id(end)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    for param_name, tensor in model.state_dict().items():
        if param_name in ("cos", "sin"):
            continue
        writer.add_tensor(gguf_name(param_name), tensor.detach().float().cpu().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
