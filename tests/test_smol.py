"""SmolLM2 read from its GGUF into PyTorch (the base of the llmos-smol fine-tune): same model as llama.cpp runs."""

from __future__ import annotations

import numpy as np
from helpers import need_module, smollm2_model

CHAT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nHow many legs does a spider have?<|im_end|>\n<|im_start|>assistant\nA spider has eight legs."
)


def converter_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter (convert_hf_to_gguf.py, LlamaModel.permute), as its spec."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def test_unpermute_undoes_the_converters_rotary_interleaving() -> None:
    need_module("gguf")
    from llmos_tiny.smol import _unpermute

    weights = np.arange(192 * 8, dtype=np.float32).reshape(192, 8)
    assert np.array_equal(_unpermute(converter_permute(weights, 3), 3), weights)
    assert not np.array_equal(converter_permute(weights, 3), weights)


def test_smollm2_from_its_gguf_gives_llama_cpps_logits() -> None:
    need_module("torch")
    need_module("transformers")
    from llmos_tiny.smol import load_gguf_llama, logits_parity

    path = smollm2_model()
    model = load_gguf_llama(path)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # 134.5M, embeddings tied
    parity = logits_parity(model, path, CHAT)
    # not bit-exact: llama.cpp quantizes activations to 8 bits for its Q4_1 products
    assert parity.positions > 30 and parity.correlation > 0.999 and parity.top1_agree >= 0.9, parity


def test_a_lora_adapter_exported_for_llama_cpp_gives_the_merged_models_logits(tmp_path) -> None:
    """The adapter format the fine-tune ships: llama.cpp with the GGUF LoRA over the base == PyTorch merged."""
    need_module("torch")
    need_module("transformers")
    import gguf
    from llmos_tiny.smol import export_lora, load_gguf_llama, logits_parity, merge_lora, read_config

    path = smollm2_model()
    config = read_config(gguf.GGUFReader(str(path)))
    rng = np.random.default_rng(7)
    rank, adapters = 8, {}
    for layer in (0, 11, 29):
        for name, (n_in, n_out) in {"self_attn.q_proj": (576, 576), "self_attn.k_proj": (576, 192),
                                    "self_attn.v_proj": (576, 192), "mlp.down_proj": (1536, 576)}.items():  # fmt: skip
            a = rng.normal(0, 0.05, (rank, n_in)).astype(np.float16).astype(np.float32)
            b = rng.normal(0, 0.05, (n_out, rank)).astype(np.float16).astype(np.float32)
            adapters[f"model.layers.{layer}.{name}"] = (a, b)
    lora = export_lora(tmp_path / "adapter.gguf", adapters, alpha=16.0, config=config)
    base = load_gguf_llama(path)
    before = logits_parity(base, path, CHAT, lora=lora)  # the adapter must matter
    merge_lora(base, adapters, alpha=16.0)
    after = logits_parity(base, path, CHAT, lora=lora)
    assert before.correlation < 0.99 and before.top1_agree < 0.9, before
    assert after.correlation > 0.998 and after.top1_agree >= 0.9, after  # the base alone: 0.9994, 0.95
