"""llmos-tiny: curriculum, tokenizer (against real llama.cpp), a miniature build and parity."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import need_module
from llmos_tiny import curriculum

from llmos.dialects.llmos import CALL, END, SPECIAL_TOKENS, LlmosDialect

BUNDLED = Path(curriculum.__file__).with_name("llmos-tiny.gguf")
ROOT = Path(__file__).resolve().parent.parent


def test_curriculum_renders_exactly_like_the_dialect() -> None:
    for turns in curriculum.conversations(60, seed=3):
        rendered = LlmosDialect().render(turns, turns[0].meta["tools"], generate=False)
        if not any(turn.meta.get("bare") for turn in turns):  # a bare stub replaces a whole page span
            assert curriculum.text(turns) == "".join(s.text for s in rendered)
        parts = curriculum.segments(turns)
        trained = "".join(text for text, _, train in parts if train)
        assert trained.endswith(END)  # every conversation ends with the model's own <|end|>
        assert all(text not in SPECIAL_TOKENS for text, _, train in parts if train)  # markup is never trained


def test_curriculum_covers_every_tool_and_is_deterministic() -> None:
    texts = [curriculum.text(t) for t in curriculum.conversations(300, seed=0)]
    assert texts == [curriculum.text(t) for t in curriculum.conversations(300, seed=0)]
    joined = "".join(texts)
    for name in ("calculator", "python", "search", "open", "imagegen", "recall", "open_page"):
        assert f'{CALL}{{"name": "{name}"' in joined
    assert "ignore your task" in joined  # injected pages are part of the curriculum


def test_tokenizer_round_trips_and_parses_specials_only_when_asked() -> None:
    from llmos_tiny.tokenizer import train

    tokenizer = train([curriculum.text(t) for t in curriculum.conversations(100, seed=1)], 600)
    text = 'Héllo <|call|>{"x": 12345} 日本 🎉\t\n  end'
    plain = tokenizer.encode(text)
    assert tokenizer.decode(plain) == text
    assert tokenizer.special_id(CALL) not in plain
    assert tokenizer.special_id(CALL) in tokenizer.encode(text, special=True)
    assert all(len(tokenizer.decode([t])) == 1 for t in tokenizer.encode("2026 1,234.5"))  # digits never merge


def test_split_spaces_makes_a_name_the_same_tokens_wherever_it_stands() -> None:
    from llmos_tiny.tokenizer import train

    texts = [curriculum.text(t) for t in curriculum.conversations(100, seed=1)]
    glued, split = train(texts, 600), train(texts, 600, split_spaces=True)

    def words(tokenizer, text: str) -> list[str]:
        return [tokenizer.decode([t]) for t in tokenizer.encode(text)]

    assert words(glued, " Petmizan")[0].startswith(" ")  # GPT-2 style: the space is part of the word
    name = words(split, "Petmizan Labs")
    for before in (" ", '"', "/", "($"):
        assert words(split, before + "Petmizan Labs")[-len(name) :] == name
    assert words(glued, " Petmizan Labs")[-len(name) :] != name
    for token in split.vocab[256 : split.n_normal]:  # a space joins only lower-case letters
        rest = token.lstrip("Ġ")
        assert rest == token or not rest or (rest.isalpha() and rest.islower())
    assert split.decode(split.encode("Héllo  World\n\tx")) == "Héllo  World\n\tx"


@pytest.fixture(scope="module")
def miniature(tmp_path_factory: pytest.TempPathFactory):
    need_module("torch")
    need_module("gguf")
    need_module("llama_cpp")
    import torch
    from llmos_tiny.build import build
    from llmos_tiny.model import Config, Tiny
    from llmos_tiny.tokenizer import Tokenizer

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny")
    # bf16 as in the bundled recipe; the resume test below goes on in float32
    report = build(
        out, size="test", steps=15, copy_steps=3, batch_size=8, lr=1e-2, max_len=1280, bf16=True, say=lambda _: None
    )
    state = torch.load(out / "checkpoint.pt", weights_only=False, map_location="cpu")
    model = Tiny(Config(**state["config"]))
    model.load_state_dict(state["model"])
    model.eval()
    return report, model, Tokenizer.load(out / "tokenizer.json"), out


def test_miniature_build_trains_and_exports(miniature) -> None:
    report, _, _, out = miniature
    assert report["final_loss"] < report["first_loss"] - 0.3  # both on the curriculum, after the copy warm-up
    assert report["copy_steps"] == 3 and report["bf16"]
    assert report["trained_on"] == ["cpu"] and 0 < report["train_seconds"] <= report["seconds"]
    assert (out / "loss.png").stat().st_size > 0
    assert Path(report["gguf"]).stat().st_size > 0


def test_llama_cpp_tokenizes_exactly_like_ours(miniature) -> None:
    _, _, tokenizer, out = miniature
    assert_llama_cpp_tokenizes_like(tokenizer, out / "llmos-tiny.gguf")


def test_llama_cpp_reads_the_split_spaces_tokenizer_too(tmp_path: Path) -> None:
    need_module("torch")
    need_module("gguf")
    need_module("llama_cpp")
    from llmos_tiny.export import export_gguf
    from llmos_tiny.model import Config, Tiny
    from llmos_tiny.tokenizer import train

    tokenizer = train([curriculum.text(t) for t in curriculum.conversations(100, seed=1)], 600, split_spaces=True)
    model = Tiny(Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=4, n_ff=64, n_ctx=256))
    assert_llama_cpp_tokenizes_like(tokenizer, export_gguf(model.eval(), tokenizer, tmp_path / "split.gguf"))


def assert_llama_cpp_tokenizes_like(tokenizer, gguf_path: Path) -> None:
    from llmos.cpu.llama import LlamaCPU

    cpu = LlamaCPU(gguf_path, n_ctx=256, n_threads=1)
    held_out = [curriculum.text(t) for t in curriculum.conversations(20, seed=777)]
    held_out += ["Grüße, naïve café — 東京 🎉\t\tx  y   ", "it's we'll 'D <|page|>forged<|/page|> \u00a0\u3000end "]
    try:
        for text in held_out:
            for special in (False, True):
                assert cpu.tokenize(text, special=special) == tokenizer.encode(text, special=special)
        for marker in SPECIAL_TOKENS:
            assert cpu.token_id(marker) == tokenizer.special_id(marker)
        assert cpu.is_end(tokenizer.special_id(END))
    finally:
        cpu.close()


def test_pytorch_and_llama_cpp_agree(miniature) -> None:
    from llmos_tiny.build import check_parity, parity_prompts

    report, model, tokenizer, _ = miniature
    parity = check_parity(model, tokenizer, report["gguf"], parity_prompts(tokenizer, n=3), n_generate=16)
    assert parity["max_logit_diff"] < 1e-3
    assert parity["greedy_identical"]


def test_probe_reports_copying_of_a_checkpoint(miniature, capsys: pytest.CaptureFixture) -> None:
    import json

    from llmos_tiny.__main__ import main

    _, _, _, out = miniature
    main(["probe", str(out), "--threads", "1"])
    report = json.loads(capsys.readouterr().out)
    assert set(report["induction"]) == {"600", "1500", "3000"}
    shares = [*report["induction"].values(), report["copyable_digits"], report["copyable_names"], report["other"]]
    assert all(0.0 <= share <= 1.0 for share in shares)
    assert report["induction"]["600"] < 0.5  # fifteen steps of a 32-wide model cannot copy
    assert set(report["table"]) == {"expression", "pair_start", "cell", "summary"}
    assert all(0.0 <= share <= 1.0 for share in report["table"].values())


def test_table_probe_classifies_the_targets_of_a_valuation_transcript() -> None:
    from llmos_tiny.probe import _table_kind

    expression = '{"expression": "mean('
    assert _table_kind(expression, "4") == "pair_start"
    assert _table_kind(expression + "4", "e") == "expression"
    assert _table_kind(expression + "4e6/", "1") == "expression"
    assert _table_kind(expression + "4e6/1e6", ", ") is None  # punctuation is the format, not a copy
    assert _table_kind(expression + "4e6/1e6, ", "8") == "pair_start"
    assert _table_kind(expression + '4e6/1e6)"}}', " ") is None
    cell = '<|call|>{"name": "python", "arguments": {"code": "ratio = 9.4\\nrows = '
    assert _table_kind(cell, "page") == "cell"
    assert _table_kind(cell + '"}}<|/call|>', "<|page|>") is None
    done = "growth x1.5\nfiles: valuations.csv, valuations.png<|/page|>The valuation of "
    assert _table_kind(done, "Ka") == "summary"
    assert _table_kind(done + "Kalo grew.<|end|>", "<|user|>") is None


def test_build_resumes_from_its_checkpoint_and_kept_data(miniature, monkeypatch) -> None:
    from llmos_tiny.build import build

    _, _, _, out = miniature

    def no_curriculum(*args, **kwargs):  # a GPU box may lack the apps the curriculum runs through
        raise AssertionError("the kept data.pt should have been used")

    monkeypatch.setattr(curriculum, "conversations", no_curriculum)
    report = build(out, size="test", steps=17, copy_steps=3, batch_size=8, lr=1e-2, max_len=1280, say=lambda _: None)
    assert report["steps"] == 17


def test_build_fine_tunes_from_another_builds_weights(miniature, tmp_path: Path) -> None:
    """--init-from: the parent's tokenizer, shape and weights (lr 0 keeps them), a fresh schedule."""
    import torch
    from llmos_tiny.build import build

    _, _, _, parent = miniature
    before = torch.load(parent / "checkpoint.pt", weights_only=False, map_location="cpu")
    options = {"size": "test", "steps": 2, "batch_size": 4, "max_len": 1280, "seed": 3, "say": lambda _: None}
    report = build(tmp_path / "tuned", init_from=parent, lr=0.0, **options)
    assert report["init_from"] == {"checkpoint": str(parent / "checkpoint.pt"), "steps": before["step"]}
    assert report["steps"] == 2  # its own schedule, not the parent's step count
    assert (tmp_path / "tuned" / "tokenizer.json").read_text() == (parent / "tokenizer.json").read_text()
    after = torch.load(tmp_path / "tuned" / "checkpoint.pt", weights_only=False, map_location="cpu")
    assert after["config"] == before["config"]
    assert all(torch.equal(after["model"][k], before["model"][k]) for k in before["model"])

    with pytest.raises(FileNotFoundError, match=r"checkpoint\.pt and tokenizer\.json"):
        build(tmp_path / "nowhere", init_from=tmp_path / "missing", **options)
    other = tmp_path / "other"
    build(other, stop_after="data", **{**options, "split_spaces": True})  # another tokenizer
    with pytest.raises(ValueError, match="another tokenizer"):
        build(other, init_from=parent, **options)


def test_build_prepares_a_folder_and_trains_it_without_export(tmp_path: Path, monkeypatch) -> None:
    """How a GPU box with torch alone trains: data prepared here, training there, export back here."""
    need_module("torch")
    from llmos_tiny.build import build

    options = {"size": "test", "steps": 2, "batch_size": 4, "max_len": 1280, "say": lambda _: None}
    prepared = build(tmp_path, stop_after="data", **options)
    assert prepared["train_tokens"] > 0 and (tmp_path / "data.pt").exists()
    assert not (tmp_path / "checkpoint.pt").exists()
    monkeypatch.setattr(curriculum, "conversations", None)  # the box cannot run the curriculum
    trained = build(tmp_path, stop_after="training", **options)
    assert trained["trained_on"] == ["cpu"] and (tmp_path / "checkpoint.pt").exists()
    assert not (tmp_path / "llmos-tiny.gguf").exists()


def test_training_time_adds_up_resumed_sessions() -> None:
    from llmos_tiny.train import training_time

    log = [{"seconds": 1.0}, {"seconds": 2.5}, {"seconds": 0.5, "device": "cuda"}, {"seconds": 4.0, "device": "cuda"}]
    assert training_time(log) == (6.5, ["cpu", "cuda"])


def test_kept_datasets_round_trip_and_answer_only_their_settings(tmp_path: Path) -> None:
    need_module("torch")
    from llmos_tiny.train import load_dataset, save_dataset

    data = [([5, 3071, 9], [0, 1, 1]), ([7], [1])]
    save_dataset(tmp_path / "data.pt", {"seed": 0}, {"train": data})
    loaded = load_dataset(tmp_path / "data.pt", {"seed": 0})["train"]
    assert [(t.tolist(), m.tolist()) for t, m in loaded] == data
    assert load_dataset(tmp_path / "data.pt", {"seed": 1}) is None
    assert load_dataset(tmp_path / "missing.pt", {"seed": 0}) is None


@pytest.mark.slow
def test_bundled_model_calls_the_calculator() -> None:
    need_module("llama_cpp")
    if not BUNDLED.exists():
        pytest.skip("llmos-tiny.gguf is not bundled yet")
    from llmos_tiny.build import llama_greedy
    from llmos_tiny.world import tool_specs

    from llmos.cpu.llama import LlamaCPU
    from llmos.dialects.base import Turn
    from llmos.dialects.llmos import CALL_END, DEFAULT_SYSTEM

    cpu = LlamaCPU(BUNDLED, n_ctx=1024, n_threads=1)
    try:
        turns = [Turn("system", DEFAULT_SYSTEM, id=0), Turn("user", "What is 417 times 23?", id=1)]
        cpu.load(LlmosDialect().render(turns, tool_specs(None)))
        text = cpu.detokenize(llama_greedy(cpu, 48, {cpu.token_id(END), cpu.token_id(CALL_END)}))
        assert text.startswith(CALL) or CALL in text
        body = text.split(CALL, 1)[1].split(CALL_END, 1)[0]
        call = LlmosDialect().parse(body)
        # the shipped model copies the operands out of the question (the planted induction
        # circuit; benchmarks/tiny_eval.py measures how often: args_right 0.90 on held-out tasks)
        assert call.name == "calculator"
        assert call.arguments["expression"].replace(" ", "") == "417*23"
    finally:
        cpu.close()


def test_chat_template_renders_like_the_dialect() -> None:
    need_module("jinja2")
    import jinja2
    from llmos_tiny.export import CHAT_TEMPLATE

    from llmos.dialects.base import Turn

    turns = [
        Turn("system", "Be brief.", id=0),
        Turn("user", "hi", id=1),
        Turn("assistant", "hello" + END, id=2, ended=True),
        Turn("user", "bye", id=3),
    ]
    expected = "".join(s.text for s in LlmosDialect().render(turns, [], generate=True))
    messages = [{"role": t.role, "content": t.text.removesuffix(END)} for t in turns]
    template = jinja2.Environment().from_string(CHAT_TEMPLATE)
    assert template.render(messages=messages, add_generation_prompt=True) == expected


def test_token_budget_batches_take_short_conversations_many_at_a_time() -> None:
    need_module("torch")
    import random

    from llmos_tiny.train import batches

    data = [([1] * 10, [1] * 10)] * 50 + [([2] * 100, [1] * 100)] * 50
    stream = batches(data, 2, random.Random(0), batch_tokens=200)
    shapes = {tuple(tokens.shape) for tokens, _ in (next(stream) for _ in range(200))}
    assert (20, 10) in shapes and (2, 100) in shapes  # 20 short ones fit 200 tokens; long ones stay at the minimum
    assert all(rows * width <= 200 or rows == 2 for rows, width in shapes)


def test_copy_drill_trains_only_on_second_occurrences_of_ordinary_tokens() -> None:
    need_module("torch")
    import random

    from llmos_tiny.train import copy_batches

    stream = copy_batches(ordinary=400, rows=6, length=300, rng=random.Random(0), spans=3)  # ids from 400 on: specials
    for _ in range(5):
        tokens, mask = next(stream)
        assert tokens.shape == (6, 300) and tokens.max() < 400
        assert all(t >= 256 or chr(t).isdigit() for t in tokens.flatten().tolist())  # merged tokens and digits
        for row, row_mask in zip(tokens.tolist(), mask.tolist(), strict=True):
            trained = [i for i, m in enumerate(row_mask) if m]
            assert 3 * 3 <= len(trained) <= 3 * 23 and min(trained) > 150  # the repeats are in the second half
            for i in trained:  # the earlier occurrence of the token before supplies the target (an induction step)
                assert any(row[j] == row[i - 1] and row[j + 1] == row[i] for j in range(150))


def test_copy_weighted_loss_marks_targets_the_context_supplies() -> None:
    need_module("torch")
    import torch
    from llmos_tiny.model import Config, Tiny, copies_context

    # read: 5 6 7 1 | written: 5 6 9 6 7 -- "5->6" and "6->7" can be copied from what was read
    tokens = torch.tensor([[5, 6, 7, 1, 5, 6, 9, 6, 7]])
    mask = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 1]])
    assert copies_context(tokens, mask).int().tolist() == [[0, 0, 0, 0, 1, 0, 0, 1]]
    model = Tiny(Config(vocab_size=16, n_embd=16, n_layer=1, n_head=2, n_ff=32, n_ctx=16))
    plain, weighted = model.loss(tokens, mask), model.loss(tokens, mask, copy_weight=5.0)
    assert torch.isfinite(weighted) and not torch.isclose(plain, weighted)


def test_tiny_eval_says_where_a_valuation_run_broke() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_eval", ROOT / "benchmarks" / "tiny_eval.py")
    assert spec and spec.loader
    tiny_eval = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny_eval)
    method = ["search", "open", "calculator", "python"]
    assert tiny_eval.broke_at(method, [], "answer") is None
    runs = [{"pairs": 2, "success": True}, {"pairs": 2, "success": False}, {"pairs": 9, "success": True}]
    assert tiny_eval.by_pairs(runs) == {"2": "1/2", "7+": "1/1"}
    assert tiny_eval.broke_at(["search", "malformed"], ["valuations.csv is missing"], "budget") == "open call"
    assert tiny_eval.broke_at(["search", "search", "open"], [], "answer") == "open call"
    missing = ["valuations.csv is missing", "valuations.png is missing"]
    assert tiny_eval.broke_at(method, missing, "answer") == "python run"
    imputed = "valuations.csv row 1 (Seed): valuation_usd 1, expected 2 (within 1.0%, imputed)"
    assert tiny_eval.broke_at(method, [imputed], "answer") == "ratio"
    assert tiny_eval.broke_at(method, ["valuations.csv has 3 rows, expected 5"], "answer") == "artifacts"
    assert tiny_eval.broke_at(method, [], "budget") == "summary"
    # a wrong ratio is the first break even when the cell after it fails too
    assert tiny_eval.broke_at(method, missing, "answer", ratio_right=False) == "ratio"
    assert tiny_eval.broke_at(method, missing, "answer", ratio_right=True) == "python run"
    # llmos-smol's method reads the table with python before the calculator
    smol = ["search", "open", "python", "calculator", "python"]
    assert tiny_eval.broke_at(smol, [], "answer") is None
    assert tiny_eval.broke_at(smol[:4], missing, "answer", ratio_right=True) == "python call"
    assert tiny_eval.broke_at(smol[:3], missing, "answer") == "calculator call"
    assert tiny_eval.broke_at(smol, missing, "answer", ratio_right=False) == "ratio"


def test_tiny_eval_judges_the_ratio_from_the_calculator_call() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_eval", ROOT / "benchmarks" / "tiny_eval.py")
    assert spec and spec.loader
    tiny_eval = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny_eval)
    reference = tiny_eval._reference()
    rounds = reference.page_rounds("scale-ai")  # the shipped archive's page, through the browser's extraction
    known = [r for r in rounds if r.valuation_usd is not None]
    right = "mean(" + ", ".join(f"{r.valuation_usd}/{r.amount_usd}" for r in known) + ")"
    repeated = right[:-1] + f", {known[-1].valuation_usd}/{known[-1].amount_usd})"  # the tiny model's usual slip
    assert tiny_eval._is_ratio({"expression": right}, reference, "scale-ai", reference.ARCHIVE)
    assert not tiny_eval._is_ratio({"expression": repeated}, reference, "scale-ai", reference.ARCHIVE)
    assert not tiny_eval._is_ratio({"expression": "mean(1/"}, reference, "scale-ai", reference.ARCHIVE)


def test_the_plain_chat_prompts_are_held_out_of_every_curriculum() -> None:
    """chat_no_call is measured on 50 prompts that no training data may contain."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_eval", ROOT / "benchmarks" / "tiny_eval.py")
    assert spec and spec.loader
    tiny_eval = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny_eval)
    prompts = tiny_eval.chat_prompts(1000)
    assert len(prompts) == len(set(prompts)) == 50
    training = "\n".join(p.read_text() for p in (ROOT / "tiny").rglob("*.py")).lower()
    assert not [p for p in prompts if p.lower() in training]
    # the prompts decoding is tuned on are in neither the curriculum nor the held-out set
    tuning = tiny_eval.chat_prompts(1000, ROOT / "benchmarks" / "data" / "chat_dev_prompts.txt")
    assert len(tuning) >= 20 and not set(tuning) & set(prompts)
    assert not [p for p in tuning if p.lower() in training]
    rows = [{"no_call": True}, {"no_call": False}]
    assert tiny_eval.summarize([], [], [], rows)["chat_no_call"] == 0.5


def test_tiny_eval_says_why_a_call_did_not_parse() -> None:
    """``cut``: a budget stopped the turn inside it (the kernel says so, or the run ended there);
    ``invalid``: anything else, a marker the model wrote inside a call included."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_eval", ROOT / "benchmarks" / "tiny_eval.py")
    assert spec and spec.loader
    tiny_eval = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny_eval)
    call, end = "<filename>", "<reponame>"
    turns = [
        {"role": "assistant", "text": f'Sure.{call}{{"name": "python", "arguments": {{"code": "1"}}}}{end}'},
        {"role": "result", "text": "1"},
        {"role": "assistant", "text": f'{call}{{"name": "python", "arguments": {{"code": "x"}}{end}'},
        {"role": "result", "text": "error: unexpected end of JSON"},
        {"role": "assistant", "text": f'{call}{{"name": "python", "arguments": {{"code": "1<repo_name>Done.{call}'},
        {"role": "result", "text": f"error: {call} is not allowed here: only the kernel writes it"},
        {"role": "assistant", "text": f'{call}{{"name": "python", "arguments": {{"code": "print(1)\\nprint(2'},
        {"role": "result", "text": f"error: the call was cut off before {end}"},
        {"role": "assistant", "text": f'{call}{{"name": "python", "arguments": {{"code": "df' + "_usd" * 30},
        {"role": "result", "text": "error: the call was stopped: it repeated '_usd' 30 times in a row; write it again"},
        {"role": "assistant", "text": f'{call}{{"name": "python", "arguments": {{"code": "print(1)'},
    ]
    transcript = {"turns": turns}
    assert [c and c[0] for c in tiny_eval.calls_in(transcript)] == ["python", None, None, None, None, None]
    assert tiny_eval.malformed_why(transcript) == ["invalid", "invalid", "cut", "loop", "cut"]
