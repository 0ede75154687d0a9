"""Evaluate a llmos-tiny GGUF through real llama.cpp on held-out curriculum conversations.

Teacher-forced by chunk: for every assistant chunk of a held-out conversation, the
conversation before it (with the reference results and pages) is loaded through the
llmos dialect and the model decodes greedily until ``<|/call|>`` or ``<|end|>``.
A call counts as well formed if it parses, and as exact if name and arguments equal
the reference; an answer counts as exact if it equals the reference text. Then a few
hand-written prompts show what the model writes first.

Usage: ``python benchmarks/tiny_eval.py [MODEL.gguf] [--n 60] [--json]``. Not covered:
running real tools (results come from the curriculum), sampling with temperature.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from llmos.cpu.llama import LlamaCPU
from llmos.dialects.base import CallSyntaxError, Turn
from llmos.dialects.llmos import CALL, CALL_END, DEFAULT_SYSTEM, END, LlmosDialect
from llmos.tiny import BUNDLED_MODEL, curriculum
from llmos.tiny.build import llama_greedy

PROMPTS = [
    "What is 417 times 23?",
    "What percentage of 1400 is 400?",
    "What is the average of 12, 7, 30, 5?",
    "How tall is Mount Zanthor?",
    "Draw a green owl at sunset.",
    "Hi, I'm Dana!",
]


def call_of(text: str):
    if CALL not in text:
        return None
    body = text.split(CALL, 1)[1].split(CALL_END, 1)[0]
    try:
        call = LlmosDialect().parse(body)
    except CallSyntaxError:
        return None
    return call.name, call.arguments


def generate(cpu: LlamaCPU, turns: list[Turn], stops: set[int], n: int = 200) -> str:
    for turn in turns:  # the kernel keeps the model's exact tokens; recreate them
        if turn.role == "assistant" and turn.tokens is None:
            turn.tokens = tuple(cpu.tokenize(turn.text, special=True))
    tools = turns[0].meta.get("tools", curriculum.TOOL_SPECS)
    cpu.load(LlmosDialect().render(turns, tools, generate=True))
    return cpu.detokenize(llama_greedy(cpu, n, stops))


def evaluate(path: str, n: int, seed: int = 424242) -> dict:
    cpu = LlamaCPU(path, n_ctx=2048, n_threads=2)
    stops = {cpu.token_id(END), cpu.token_id(CALL_END)}
    scores: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for conversation in curriculum.conversations(n, seed=seed):
        task = conversation[0].meta["task"]
        for i, turn in enumerate(conversation):
            if turn.role != "assistant" or not turn.meta.get("train", True):
                continue
            text = generate(cpu, conversation[:i], stops)
            score = scores[task]
            if CALL in turn.text:
                score["calls"] += 1
                score["calls_well_formed"] += call_of(text) is not None
                score["calls_exact"] += call_of(text) == call_of(turn.text)
                score["calls_right_tool"] += (call_of(text) or ("",))[0] == call_of(turn.text)[0]
            else:
                score["answers"] += 1
                score["answers_exact"] += text == turn.text
                score["answers_ended"] += text.endswith(END) and CALL not in text
    samples = {}
    for prompt in PROMPTS:
        turns = [Turn("system", DEFAULT_SYSTEM, id=0), Turn("user", prompt, id=1)]
        samples[prompt] = generate(cpu, turns, stops, n=80)
    cpu.close()
    return {"scores": {k: dict(v) for k, v in sorted(scores.items())}, "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default=str(BUNDLED_MODEL))
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = evaluate(args.model, args.n)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for task, score in report["scores"].items():
        print(task, ", ".join(f"{k}={v}" for k, v in score.items()))
    for prompt, text in report["samples"].items():
        print(f"\n> {prompt}\n{text}")


if __name__ == "__main__":
    main()
