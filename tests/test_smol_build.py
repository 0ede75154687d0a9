"""llmos-smol's recipe: the curriculum keeps held-out data out, speaks the smol dialect, and LoRA starts at the base."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import need_module

ROOT = Path(__file__).resolve().parent.parent
CHATS = {"hi": "Hello! How can I help you today?", "What is a verb?": "A verb is a word for an action."}


@pytest.fixture(scope="module")
def curriculum():
    from llmos_tiny import smol_data

    return smol_data.conversations(40, seed=7, chats=CHATS)


def test_the_curriculum_is_reproducible_and_holds_out_the_evaluations_data(curriculum) -> None:
    from llmos_tiny import funding, smol_data

    again = smol_data.conversations(40, seed=7, chats=CHATS)
    assert [[t.text for t in c] for c in again] == [[t.text for t in c] for c in curriculum]
    layouts = {t.meta["layout"] for c in curriculum for t in c if "layout" in t.meta}
    assert layouts and layouts <= set(smol_data.TRAIN_LAYOUTS) and not layouts & set(smol_data.HELD_OUT_LAYOUTS)
    users = [t.text for c in curriculum for t in c if t.role == "user"]
    demo_start = funding.TASK_PROMPT.split("{name}")[0]
    assert not [u for u in users if u.startswith(demo_start)]
    archived = {
        re.search(r"funding history of (.+?)\. ", p.read_text()).group(1) for p in ROOT.glob("examples/valuation*.yaml")
    }
    assert len(archived) == 3
    every_text = "\n".join(t.text for c in curriculum for t in c)
    assert not [name for name in archived if name in every_text]


def test_no_valuation_phrasing_borrows_six_words_in_a_row_from_the_demos_prompt() -> None:
    from llmos_tiny import funding, smol_data

    def runs(text: str) -> set[tuple[str, ...]]:
        words = re.findall(r"[\w'/-]+", text.lower())
        return {tuple(words[i : i + 6]) for i in range(len(words) - 5)}

    held_out = runs(funding.TASK_PROMPT)
    assert len(smol_data.VALUATION_PROMPTS) >= 6
    borrowed = {p: runs(p) & held_out for p in smol_data.VALUATION_PROMPTS}
    assert {p: shared for p, shared in borrowed.items() if shared} == {}


def test_every_model_chunk_is_in_the_smol_dialect_and_its_calls_parse(curriculum) -> None:
    from llmos_tiny.world import all_tool_names

    from llmos.cpu.base import Piece
    from llmos.dialects.base import CallClosed, Malformed
    from llmos.dialects.smol import SPECIAL_TOKENS, SmolDialect

    dialect, tools = SmolDialect(), set(all_tool_names())
    pattern = "(" + "|".join(map(re.escape, SPECIAL_TOKENS)) + ")"
    for conversation in curriculum:
        assert "<|call|>" not in "".join(t.text for t in conversation)  # the llmos dialect's markers are gone
        for turn in (t for t in conversation if t.role == "assistant"):
            parser = dialect.parser(controls=True)
            events = []
            for part in re.split(pattern, turn.text):
                events += parser.feed(Piece(None, part, control=part in SPECIAL_TOKENS)) if part else []
            assert not [e for e in events if isinstance(e, Malformed)], turn.text
            for event in (e for e in events if isinstance(e, CallClosed)):
                assert dialect.parse(event.raw).name in tools


def test_the_loss_falls_on_the_models_own_tokens_only_and_nothing_is_clipped(curriculum) -> None:
    need_module("llama_cpp")
    from llmos_tiny import smol_data
    from llmos_tiny.smol_train import SmolSettings

    from llmos.cpu.llama import LlamaCPU
    from llmos.dialects.smol import CALL, IM_START
    from llmos.models import packaged_model

    cpu = LlamaCPU(packaged_model("smollm2"), n_ctx=64, n_threads=1)
    try:
        tokenize = lambda text, special: cpu.tokenize(text, special=special)  # noqa: E731
        ids, mask = smol_data.encode(curriculum[0], tokenize, None)
        trained = cpu.detokenize([t for t, m in zip(ids, mask, strict=True) if m])
        untrained = cpu.detokenize([t for t, m in zip(ids, mask, strict=True) if not m])
        lengths = {tuple(c[0].meta["tasks"]): len(smol_data.encode(c, tokenize, None)[0]) for c in curriculum}
    finally:
        cpu.close()
    # training clips at max_tokens: a longer conversation would lose its end (a valuation's cells and summary)
    assert any("valuation" in tasks for tasks in lengths)
    assert {tasks: n for tasks, n in lengths.items() if n > SmolSettings().max_tokens} == {}
    assert len(ids) == len(mask) and 0 < sum(mask) < len(ids)
    assert IM_START not in trained and "Tools:" in untrained
    model_text = "".join(t.text for t in curriculum[0] if t.role == "assistant" and t.meta.get("train", True))
    assert trained.replace(CALL, "") and trained == model_text


def test_lora_starts_at_the_base_and_learns() -> None:
    need_module("transformers")
    import torch
    from llmos_tiny.smol_train import SmolSettings, adapters, add_lora, train
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    # initializer_range: a frozen output layer of default (tiny) weights could barely move the logits
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, initializer_range=0.5)  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    tokens = torch.randint(0, 64, (1, 24))
    before = model(tokens).logits
    wrapped = add_lora(model, rank=4, alpha=8, seed=0)
    assert len(wrapped) == 2 * 7 and torch.equal(model(tokens).logits, before)
    assert all(not p.requires_grad for n, p in model.named_parameters() if not n.endswith((".a", ".b")))
    ids = tokens[0].tolist()
    data = [(ids, [0] * 8 + [1] * 16)] * 40
    settings = SmolSettings(lr=1e-2, warmup=1, batch_tokens=16, bf16=False)
    run = train(model, wrapped, data, settings, "cpu", lambda _: None)
    assert run["log"][-1]["loss"] < run["log"][0]["loss"] * 0.8
    a, b = adapters(wrapped)["model.layers.0.self_attn.q_proj"]
    assert a.shape == (4, 32) and b.shape == (32, 4)
    json.dumps(run)  # the build record is plain JSON


def test_a_missing_or_foreign_adapter_is_a_clear_error(tmp_path) -> None:
    need_module("llama_cpp")
    from llmos.cpu.base import CPUError
    from llmos.cpu.llama import LlamaCPU
    from llmos.models import packaged_model

    foreign = tmp_path / "not-an-adapter.gguf"
    foreign.write_bytes(b"GGUF" + b"\0" * 64)
    for adapter in (tmp_path / "missing.gguf", foreign):
        with pytest.raises(CPUError, match="LoRA adapter"):
            LlamaCPU(packaged_model("smollm2"), n_ctx=64, n_threads=1, lora=adapter)


def test_an_exported_adapter_reads_back_for_a_warm_start(tmp_path) -> None:
    need_module("transformers")
    import numpy as np
    import torch
    from llmos_tiny.smol import export_lora
    from llmos_tiny.smol_train import adapters, add_lora, load_adapters
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    trained = add_lora(LlamaForCausalLM(config), rank=4, alpha=8, seed=0)
    with torch.no_grad():
        for wrapper in trained.values():
            wrapper.b.normal_()  # B starts at zero: give the round trip something to carry
    path = export_lora(tmp_path / "a.lora.gguf", adapters(trained), 8, config.to_dict())
    fresh = add_lora(LlamaForCausalLM(config), rank=4, alpha=8, seed=1)
    load_adapters(fresh, path, config.to_dict(), 8)
    for name, (a, b) in adapters(trained).items():
        got_a, got_b = adapters(fresh)[name]
        assert np.allclose(got_a, a, atol=1e-3) and np.allclose(got_b, b, atol=1e-2), name  # float16 in the file
    with pytest.raises(ValueError, match="another alpha"):
        load_adapters(add_lora(LlamaForCausalLM(config), rank=4, alpha=16, seed=0), path, config.to_dict(), 16)
    with pytest.raises(ValueError, match="rank"):
        load_adapters(add_lora(LlamaForCausalLM(config), rank=2, alpha=8, seed=0), path, config.to_dict(), 8)


@pytest.mark.parametrize("seed", [3, 8])
def test_the_valuation_cells_print_what_the_curriculum_says_and_pass_the_demos_check(tmp_path, seed) -> None:
    """The two python cells the curriculum teaches, run by the real python app on the page the task opened:
    they print exactly the result turns the model trains on (the first, the calculator's terms), and their
    files pass the demo's own check."""
    need_module("ipykernel")
    import random

    from helpers import valuation_reference
    from llmos_tiny import smol_data
    from llmos_tiny.world import World
    from llmos_tools import ToolContext, load_tools

    from llmos.dialects.llmos import LlmosDialect

    python = load_tools(use_cache=False)["python"]
    with World() as world:
        turns = smol_data.valuation(random.Random(seed), world)
        calls = [
            LlmosDialect().parse(t.text.split("<|call|>")[1].split("<|/call|>")[0])
            for t in turns
            if "<|call|>" in t.text
        ]
        results = [t for t in turns if t.role == "result"]
        assert [c.name for c in calls] == ["search", "open", "python", "calculator", "python"]
        opened = results[1]
        context = ToolContext(session_id=f"cells-{seed}", workdir=tmp_path, documents={opened.source: opened.text})
        for i in (2, 4):
            assert python.run(calls[i].arguments, context).text == results[i].text
        terms = results[2].text.removeprefix("valuation/amount: ")
        assert calls[3].arguments["expression"] == f"mean({terms})"  # the calculator copies the line above
        company = calls[0].arguments["query"].removesuffix(" funding rounds")
        reference = valuation_reference()
        expected = reference.expected_rows(company, world.root)
        assert reference.check_csv(tmp_path / "valuations.csv", expected) == []
        assert reference.check_plot(tmp_path / "valuations.png") == []


def test_a_chat_target_greets_a_greeting_and_neither_echoes_nor_writes_unasked_code_nor_runs_of_emoji() -> None:
    from llmos_tiny import smol_chat

    assert smol_chat.fits("hello!", "Hello! How can I help you today?")
    assert smol_chat.fits("good afternoon", "Good afternoon. What can I do for you?")
    assert not smol_chat.fits("hello!", "How can I assist you?")
    assert not smol_chat.fits("hey there", "I'm a helpful assistant.")
    assert smol_chat.fits("Name 3 famous painters.", "1. Pablo Picasso")
    assert smol_chat.fits("Which hill is highest?", "Mount Everest.")  # "hi" inside a word is no greeting
    assert not smol_chat.fits("nice to meet you", "nice to meet you. I'm a helpful assistant.")  # an echo
    assert smol_chat.fits("good evening", "Good evening.")  # a greeting may be answered with itself
    assert not smol_chat.fits("hey, what's up?", "Hey, what's up? I'm here to help.")
    assert smol_chat.fits("hi", "Hi! How can I help?")  # a one-word greeting may open the answer
    assert not smol_chat.fits("Write a card for a friend turning 40.", "```python\nprint('Happy 40th!')\n```")
    assert smol_chat.fits("Write a python function that adds two numbers.", "```python\ndef add(a, b): ...\n```")
    invitation = "Write a text message inviting a friend to dinner."
    assert not smol_chat.fits(invitation, "Here's a text message:\n\n\U0001f381\U0001f4a1\U0001f31f\U0001f340 [#1234]")
    assert smol_chat.fits(invitation, "Hi Sam! Dinner at mine on Friday at 7? \U0001f37d\ufe0f Let me know.")


def test_a_valuations_broken_ratio_copy_is_context_and_its_retry_is_the_target() -> None:
    """Some valuations show a ratio call the calculator rejects (a copy slip, not trained on), the
    calculator's real error, and the whole expression copied again (trained on)."""
    import random

    from llmos_tiny import smol_data
    from llmos_tiny.world import World

    retried = 0
    with World() as world:
        for seed in range(40):  # every slip the curriculum draws must be one the calculator rejects
            turns = smol_data.valuation(random.Random(seed), world)
            ratio_calls = [t for t in turns if '"name": "calculator"' in t.text]
            if len(ratio_calls) == 1:
                continue
            retried += 1
            first, retry = ratio_calls
            assert first.meta["train"] is False and retry.meta.get("train", True)
            error = turns[turns.index(first) + 1]
            assert error.role == "result" and error.text.startswith("error: ")
            assert retry.text.startswith(smol_data.RATIO_RETRY_LEAD_IN)
            good = retry.text.split('"expression": "')[1].split('"')[0]
            assert good.endswith(")") and good != first.text.split('"expression": "')[1].split('"')[0]
            assert not turns[turns.index(retry) + 1].text.startswith("error")  # the retry's result is the ratio
    assert 3 <= retried <= 16  # about RATIO_SLIP_SHARE of 40


def test_the_curriculums_running_text_shares_no_sentence_template_with_the_held_out_prose() -> None:
    from llmos_tiny import smol_data

    def runs(template: str) -> set[tuple[str, ...]]:
        found = set()
        for literal in re.split(r"\{\w+\}", template.lower()):
            words = re.findall(r"[\w'-]+", literal)
            found |= {tuple(words[i : i + 3]) for i in range(len(words) - 2)}
        return found

    held_out = runs(smol_data.PROSE_KNOWN) | runs(smol_data.PROSE_UNKNOWN)
    assert held_out and "prose" in smol_data.HELD_OUT_LAYOUTS and "story" in smol_data.TRAIN_LAYOUTS
    shared = {t: runs(t) & held_out for t in smol_data.STORY_KNOWN + smol_data.STORY_UNKNOWN}
    assert not any(shared.values()), shared


def test_a_ratio_questions_working_lists_every_round_and_its_expression_copies_those_with_both() -> None:
    """Before the calculator: every round in page order, ``at`` its valuation where the page gives one;
    the expression's terms are the lines with both figures, in the same order."""
    import random

    from llmos_tiny import smol_data
    from llmos_tiny.world import World

    layouts, undisclosed = set(), 0
    with World() as world:
        for seed in range(30):
            turns = smol_data.ratio_question(random.Random(seed), world)
            layouts.add(turns[0].meta["layout"])
            ratio = next(t for t in turns if '"name": "calculator"' in t.text)
            listing = ratio.text.split("with each valuation the page gives:")[1].split("The mean valuation")[0]
            lines = listing.strip().splitlines()
            both = [line.split(": raised ")[1].split(" at ") for line in lines if " at " in line]
            undisclosed += len(lines) - len(both)
            expression = ratio.text.split('"expression": "')[1].split('"')[0]
            assert both and expression == "mean(" + ", ".join(f"{value}/{amount}" for amount, value in both) + ")"
    assert {"table", "story"} <= layouts and undisclosed > 0
