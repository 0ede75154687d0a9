"""The planted induction circuit: it copies at step 0, and llama.cpp runs it like PyTorch."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from helpers import need_module
from llmos_tiny import curriculum


def planted(vocab_size: int = 3072, n_ctx: int = 1600, plant: bool = True):
    from llmos_tiny.circuits import ROPE_THETA, plant_induction
    from llmos_tiny.model import Config, Tiny

    shape = {"n_embd": 128, "n_layer": 4, "n_head": 4, "n_ff": 384, "tie_embeddings": True}
    model = Tiny(Config(vocab_size=vocab_size, n_ctx=n_ctx, rope_theta=ROPE_THETA, **shape))
    return (plant_induction(model) if plant else model).eval()


def test_a_planted_model_copies_before_any_training() -> None:
    need_module("torch")
    from llmos_tiny.probe import induction

    # the same measure as `python -m llmos_tiny probe`: an 8-token span recurring far back
    assert induction(planted(), 3072, 600, rows=6) > 0.7
    assert induction(planted(), 3072, 1500, rows=6) > 0.7
    assert induction(planted(plant=False), 3072, 600, rows=6) < 0.1


def test_plant_refuses_shapes_it_was_not_written_for() -> None:
    need_module("torch")
    from llmos_tiny.circuits import plant_induction
    from llmos_tiny.model import Config, Tiny

    with pytest.raises(ValueError, match="n_embd 128"):
        plant_induction(Tiny(Config(vocab_size=300, n_embd=64, n_head=2, tie_embeddings=True)))
    with pytest.raises(ValueError, match="tied"):
        plant_induction(Tiny(Config(vocab_size=300, n_embd=128, n_head=4)))


def test_llama_cpp_runs_the_planted_circuit_like_pytorch(tmp_path: Path) -> None:
    need_module("torch")
    need_module("gguf")
    need_module("llama_cpp")
    from llmos_tiny.build import check_parity
    from llmos_tiny.export import export_gguf
    from llmos_tiny.tokenizer import train

    tokenizer = train([curriculum.text(t) for t in curriculum.conversations(100, seed=1)], 600, split_spaces=True)
    model = planted(len(tokenizer), n_ctx=2048)
    gguf = export_gguf(model, tokenizer, tmp_path / "planted.gguf")  # rope_theta 1e12 in the metadata
    rng = random.Random(3)
    span = [rng.randrange(256, tokenizer.n_normal) for _ in range(12)]
    filler = [rng.randrange(256, tokenizer.n_normal) for _ in range(700)]
    prompt = [*filler[:300], *span, *filler[300:], *span[:2]]
    parity = check_parity(model, tokenizer, gguf, [prompt], n_generate=10)
    assert parity["max_logit_diff"] < 1e-2
    assert parity["greedy_identical"]
    assert model.greedy(prompt, 10) == span[2:12]  # so llama.cpp, too, copies the span 700 tokens on


def test_build_refuses_to_plant_into_other_sizes_at_once(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from llmos_tiny.__main__ import main

    with pytest.raises(SystemExit):
        main(["build", "--out", str(tmp_path), "--size", "test"])
    assert "--no-plant-induction" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was built
