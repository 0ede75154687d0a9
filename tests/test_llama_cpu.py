"""The llama.cpp CPU on real models: tokenizing, prefill, decoding, grammars, truncation and KV shifting."""

from __future__ import annotations

import pytest

from llmos.cpu.base import ContextOverflow, CPUError, Sampling, Segment
from llmos.cpu.llama import LlamaCPU

STORY = "Once upon a time, there was a little dog named Max. Max liked to run in the park."
MIDDLE = " One day it rained and rained, and the park was full of big puddles and mud."
END = " Max saw a red ball under a tree. He"


@pytest.fixture
def stories(stories_path) -> LlamaCPU:
    cpu = LlamaCPU(stories_path, n_ctx=512, n_threads=1)
    yield cpu
    cpu.close()


def test_tokenize_round_trips_and_special_parsing_is_explicit(llmos_gguf) -> None:
    cpu = LlamaCPU(llmos_gguf, n_ctx=256, n_threads=1)
    call = cpu.token_id("<|call|>")
    assert call is not None and cpu.is_control(call)
    assert cpu.tokenize("a <|call|> b", special=True).count(call) == 1
    assert call not in cpu.tokenize("a <|call|> b", special=False)
    text = "héllo wörld, 1,240 × 15% 🙂\n"
    assert cpu.detokenize(cpu.tokenize(text, special=False)) == text


def test_prefill_evaluates_only_new_tokens(stories) -> None:
    stories.load([Segment(STORY, trusted=False, key="a")])
    list(stories.generate(Sampling(max_tokens=1)))
    first = stories.counters.tokens_evaluated
    assert first == len(stories.tokens) - 1  # the sampled token waits for the next step
    stories.load([Segment(STORY, trusted=False, key="a"), Segment(END, trusted=False, key="b")])
    list(stories.generate(Sampling(max_tokens=1)))
    assert stories.counters.tokens_evaluated == len(stories.tokens) - 1
    assert stories.counters.reprefilled_tokens == 0


def test_changed_prefix_is_reevaluated_and_counted(stories) -> None:
    stories.load([Segment(STORY, trusted=False), Segment(END, trusted=False)])
    list(stories.generate(Sampling(max_tokens=1)))
    stories.load([Segment(STORY.replace("dog", "cat"), trusted=False), Segment(END, trusted=False)])
    list(stories.generate(Sampling(max_tokens=1)))
    assert stories.counters.reprefilled_tokens > 0


def test_seeded_sampling_is_reproducible_and_greedy_is_deterministic(stories_path) -> None:
    runs = []
    for _ in range(2):
        cpu = LlamaCPU(stories_path, n_ctx=512, n_threads=1)
        cpu.load([Segment(STORY, trusted=False)])
        hot = [p.token for p in cpu.generate(Sampling(temperature=0.9, top_p=0.9, top_k=40, seed=7, max_tokens=24))]
        runs.append(hot)
        cpu.close()
    assert runs[0] == runs[1]


def test_a_repeat_penalty_changes_greedy_decoding(stories) -> None:
    """Sampling.repeat_penalty reaches llama.cpp's penalties sampler (it used to crash the bindings)."""
    outputs = []
    for penalty in (1.0, 1.5):
        stories.load([Segment(STORY, trusted=False)])
        outputs.append([p.token for p in stories.generate(Sampling(repeat_penalty=penalty, max_tokens=48))])
    assert len(outputs[1]) > 0 and outputs[0] != outputs[1]


def test_dry_breaks_the_repeats_of_greedy_decoding(stories) -> None:
    """Sampling.dry_multiplier reaches llama.cpp's DRY sampler: greedy stories260K repeats a 10-token
    run within 200 tokens; with DRY no run longer than its allowed length plus a few comes back."""

    def longest_repeat(tokens: list[int]) -> int:
        grams = lambda n: [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]  # noqa: E731
        return max((n for n in range(2, 40) if len(set(grams(n))) < len(grams(n))), default=0)

    repeats = []
    for multiplier in (0.0, 0.8):
        stories.load([Segment("Once upon a time, there was a little dog named Max.", trusted=False)])
        tokens = [p.token for p in stories.generate(Sampling(max_tokens=200, dry_multiplier=multiplier))]
        repeats.append(longest_repeat(tokens))
    assert repeats[0] >= 8 and repeats[1] < repeats[0], repeats


def test_grammar_constrains_the_output(stories) -> None:
    stories.load([Segment(STORY, trusted=False)])
    text = "".join(
        p.text for p in stories.generate(Sampling(max_tokens=40, grammar='root ::= "Max is " [a-z]{2,8} "."'))
    )
    assert text.startswith("Max is ") and text.rstrip("</s>").endswith(".")


def test_bad_grammar_is_a_clear_error(stories) -> None:
    stories.load([Segment(STORY, trusted=False)])
    with pytest.raises(CPUError, match="grammar"):
        list(stories.generate(Sampling(grammar="root ::= (")))


def test_remove_span_shifts_instead_of_reprefilling(stories, stories_path) -> None:
    assert stories.can_shift
    stories.load([Segment(STORY, trusted=False), Segment(MIDDLE, trusted=False), Segment(END, trusted=False)])
    list(stories.generate(Sampling(max_tokens=1)))
    stories.truncate(len(stories.tokens) - 1)  # drop the sampled token: compare from the same context
    start = 1 + len(stories.tokenize(STORY, special=False))
    end = start + len(stories.tokenize(MIDDLE, special=False))
    evaluated = stories.counters.tokens_evaluated
    assert stories.remove_span(start, end) is True
    after = [p.token for p in stories.generate(Sampling(max_tokens=16))]
    # no suffix was re-prefilled: only the new tokens were evaluated
    assert stories.counters.tokens_evaluated - evaluated == 15
    assert stories.counters.reprefilled_tokens == 0
    fresh = LlamaCPU(stories_path, n_ctx=512, n_threads=1)
    fresh.load([Segment(STORY, trusted=False), Segment(END, trusted=False)])
    assert [p.token for p in fresh.generate(Sampling(max_tokens=16))] == after  # positions are consistent
    fresh.close()


def test_remove_span_rejects_bad_spans(stories) -> None:
    stories.load([Segment(STORY, trusted=False)])
    with pytest.raises(ValueError):
        stories.remove_span(5, 10_000)


def test_context_overflow_is_an_error_not_a_crash(stories) -> None:
    with pytest.raises(ContextOverflow):
        stories.load([Segment("word " * 2000, trusted=False)])


def test_closing_the_stream_stops_decoding(stories) -> None:
    stories.load([Segment(STORY, trusted=False)])
    stream = stories.generate(Sampling(max_tokens=100))
    next(stream)
    next(stream)
    stream.close()
    assert stories.counters.tokens_sampled == 2


def test_a_missing_or_broken_model_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(CPUError, match="not found"):
        LlamaCPU(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model" * 100)
    with pytest.raises(CPUError, match="could not load"):
        LlamaCPU(junk)


def test_call_markers_never_end_generation(llmos_gguf) -> None:
    from llmos.dialects.llmos import CALL, END, LlmosDialect
    from llmos.kernel import Kernel

    cpu = LlamaCPU(llmos_gguf, n_ctx=256, n_threads=1)
    call, end = cpu.token_id(CALL), cpu.token_id(END)
    assert call is not None and end is not None
    # llama.cpp guesses "<|call|>" is an end-of-generation token (it is, for gpt-oss)
    assert cpu._is_eog(call)
    Kernel(cpu, LlmosDialect(), [])
    assert not cpu.is_end(call) and cpu.is_end(end)
    cpu.close()
