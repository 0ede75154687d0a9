"""The lazy call grammar: llama.cpp's own grammar engine on every installed tool's calls, and on
llmos-smol's own calls through the real CPU and kernel."""

from __future__ import annotations

import ctypes
import json
import math
import re
from typing import Any

import numpy as np
import pytest
from helpers import smollm2_model
from llmos_tools import load_tools

from llmos.cpu import sampler
from llmos.cpu.base import Sampling
from llmos.cpu.llama import LlamaCPU
from llmos.dialects import llmos as llmos_dialect
from llmos.dialects.base import Turn
from llmos.dialects.grammar import lazy_call_grammar
from llmos.dialects.smol import CALL, CALL_END, IM_END, SmolDialect
from llmos.kernel import Budgets, Kernel
from llmos.models import model_sampling, open_machine
from llmos.testing import ScriptedCPU


@pytest.fixture(scope="module")
def specs() -> list[dict[str, Any]]:
    return [tool.spec() for tool in load_tools().tools.values()]


@pytest.fixture(scope="module")
def vocab_cpu():
    """SmolLM2's vocabulary (the grammar reads pieces of text; the weights do not matter here)."""
    cpu = LlamaCPU(smollm2_model(), n_ctx=256, n_threads=1)
    yield cpu
    cpu.close()


def _allowed(cpu: LlamaCPU, sampler, token: int) -> bool:
    lib = cpu.lib
    data = (lib.llama_token_data * 1)(lib.llama_token_data(token, 0.0, 0.0))
    candidates = lib.llama_token_data_array(data, 1, -1, False)
    lib.llama_sampler_apply(sampler, ctypes.byref(candidates))
    return math.isfinite(data[0].logit)


def grammar_reads(cpu: LlamaCPU, grammar: str, text: str) -> tuple[bool, bool]:
    """(llama.cpp's grammar, lazy from the call marker on, allows every token of ``text``; it then
    allows the end of generation). The grammar sampler is the one :class:`LlamaCPU` builds."""
    lib = cpu.lib
    grammar_sampler = sampler._grammar(lib, cpu._vocab, Sampling(grammar=grammar), cpu.token_id(CALL))
    try:
        for token in cpu.tokenize(text, special=True):
            if not _allowed(cpu, grammar_sampler, token):
                return False, False
            lib.llama_sampler_accept(grammar_sampler, token)  # only after the check: a rejected token aborts
        return True, _allowed(cpu, grammar_sampler, cpu.token_id(IM_END))
    finally:
        lib.llama_sampler_free(grammar_sampler)


def _example(schema: dict[str, Any]) -> Any:
    if "enum" in schema:
        return schema["enum"][-1]
    kind = schema.get("type")
    if kind == "array":
        return [_example(schema.get("items", {"type": "string"}))] * 2
    return {
        "string": 'print("a \\ b")\nfor x in [1]:\n\tpass  # é ✓',
        "integer": -3,
        "number": 2.5,
        "boolean": True,
    }.get(kind or "", {"key": "value"})


def test_every_installed_tool_call_with_every_argument_reads_to_the_end(vocab_cpu, specs) -> None:
    grammar = lazy_call_grammar(specs, CALL)
    assert len(specs) >= 6
    for spec in specs:
        properties = spec.get("parameters", {}).get("properties", {})
        arguments = {name: _example(schema) for name, schema in properties.items()}
        for ascii_only in (True, False):
            call = json.dumps({"name": spec["name"], "arguments": arguments}, ensure_ascii=ascii_only)
            assert grammar_reads(vocab_cpu, grammar, f"Let me check.{CALL}{call}") == (True, True), call
    some = json.dumps({"name": "imagegen", "arguments": {"prompt": "a cat", "seed": 7}}, separators=(",", ":"))
    assert grammar_reads(vocab_cpu, grammar, CALL + some) == (True, True)  # optional ones may be skipped


def test_a_plugins_unusual_schema_builds_a_grammar_llama_cpp_takes(vocab_cpu) -> None:
    """Several types, enums, nested objects, arrays of objects, a quote in a name: what an MCP server may declare."""
    properties = {
        'say "hi"': {"type": "string"},
        "maybe": {"type": ["string", "null"]},
        "rows": {"type": "array", "items": {"type": "object"}},
        "mode": {"enum": ["a", "b"]},
        "opts": {"type": "object"},
    }
    spec = {"name": "odd.tool", "parameters": {"type": "object", "properties": properties, "required": ["mode"]}}
    grammar = lazy_call_grammar([spec], CALL)
    arguments = {'say "hi"': "x", "maybe": None, "rows": [{"k": 1}], "mode": "b", "opts": {"a": "b"}}
    call = json.dumps({"name": "odd.tool", "arguments": arguments})
    assert grammar_reads(vocab_cpu, grammar, CALL + call) == (True, True)
    assert grammar_reads(vocab_cpu, grammar, CALL + '{"name": "odd.tool", "arguments": {"mode": "a"}}') == (True, True)
    assert not grammar_reads(vocab_cpu, grammar, CALL + '{"name": "odd.tool", "arguments": {"maybe": 3')[0]


@pytest.mark.parametrize(
    "call, why",
    [
        ('{"name": "nosuch", "arguments": {}}', "an undeclared tool"),
        ('{"name": "calculator", "arguments": {"expr": "1"}}', "an undeclared argument"),
        ('{"name": "python", "arguments": {"code": "print("hi")"}}', "an unescaped quote inside a string"),
        ('{"name": "python", "arguments": {"code": 7}}', "a number where the tool declares a string"),
        ('{"name": "python", "arguments": {"code": "x\\q"}}', "an escape JSON does not have"),
        ('{"arguments": {}, "name": "python"}', "arguments before the name"),
        ('{"name": "python", "arguments": {"code": "1", "code": "2"}}', "an argument written twice"),
        ('{"name": "python", "arguments": {}}', "a required argument left out"),
        ('{"name": "open", "arguments": {"page": 2, "url": "u"}}', "arguments out of declaration order"),
    ],
)
def test_a_malformed_call_is_stopped_at_the_first_wrong_token(vocab_cpu, specs, call, why) -> None:
    assert grammar_reads(vocab_cpu, lazy_call_grammar(specs, CALL), CALL + call)[0] is False, why


def test_a_call_cannot_end_before_its_json_does(vocab_cpu, specs) -> None:
    grammar = lazy_call_grammar(specs, CALL)
    assert grammar_reads(vocab_cpu, grammar, CALL + '{"name": "python", "arguments": {"code": "print(1)') == (
        True,
        False,
    )
    assert grammar_reads(vocab_cpu, grammar, "Plain text, no call yet") == (True, True)


# ---------------------------------------------------------------- on the real model
@pytest.fixture(scope="module")
def smol():
    smollm2_model()
    machine = open_machine("llmos-smol", n_ctx=2048)
    yield machine
    machine.cpu.close()


def _decode(machine, question: str, specs, **sampling: Any) -> list:
    turns = [Turn("system", SmolDialect.default_system, id=0), Turn("user", question, id=1)]
    machine.cpu.not_end.update(machine.cpu.token_id(m) for m in (CALL, CALL_END))  # as the kernel does
    machine.cpu.load(machine.dialect.render(turns, specs))
    return list(machine.cpu.generate(Sampling(max_tokens=80, **sampling)))


# The model's own call pinned to a multiplication it would never write: the grammar bites only
# after the model chose to call, and its end of generation becomes the call's end marker.
PINNED = (
    f'root ::= "{CALL}" "{{\\"name\\": \\"calculator\\", \\"arguments\\": {{\\"expression\\": \\"" [1-9] " * 7\\"}}}}"'
)


def test_the_grammar_applies_from_the_models_own_call_marker_on(smol, specs) -> None:
    free = _decode(smol, "What is 15% of 1,240?", specs)
    pinned = _decode(smol, "What is 15% of 1,240?", specs, grammar=PINNED, grammar_trigger=CALL, forced_suffix=CALL_END)
    opened = next(i for i, piece in enumerate(free) if piece.text == CALL)  # the model calls on its own
    assert [p.token for p in pinned[: opened + 1]] == [p.token for p in free[: opened + 1]]
    body = "".join(p.text for p in pinned[opened + 1 : -1])
    assert re.fullmatch(r'\{"name": "calculator", "arguments": \{"expression": "[1-9] \* 7"\}\}', body), body
    assert pinned[-1].text == CALL_END and pinned[-1].control


def test_a_chat_answer_is_untouched_by_the_call_grammar(smol, specs) -> None:
    lazy = smol.dialect.call_grammar(specs)
    assert lazy["grammar_trigger"] == CALL and lazy["forced_suffix"] == CALL_END
    free = _decode(smol, "hello, who are you?", specs)
    constrained = _decode(smol, "hello, who are you?", specs, **lazy)
    assert CALL not in "".join(p.text for p in free)
    assert [p.token for p in constrained] == [p.token for p in free]


# Requests llmos-smol answers with a python call, several of which it breaks when decoded free: quotes
# inside the code, a call never closed. Each round breaks other ones (seed 49 wrote code with unescaped
# quotes, seed 51 put a control token inside the call, seed 53 looped on ``", \\``), so the test asks
# several and counts, instead of pinning one request to one round.
PYTHON_REQUESTS = (
    "Use python to print 'He said \"hi\"' exactly.",
    "Use python to build a CSV with columns name and age for Ann 31 and Bo 42 and print it.",
    "Use python to convert the dictionary {'a': 1, 'b': 2} to JSON and print it.",
    "Use python to print the lines of a two-line poem about the sea.",
    "Use python to print a short shopping list, one item per line.",
    "Use python to compute the sum of the squares from 1 to 20.",
)
# What the grammar rules out. A budget can still cut a call off and the loop guard stop one: a grammar
# says what a call may be, not that the model ends it.
BROKEN = ("error: the call is not valid JSON", "error: the call was not closed with")


def test_the_kernel_keeps_the_models_calls_well_formed_unless_told_not_to(smol) -> None:
    tools = load_tools(allow={"python", "calculator"})

    def first(question: str, constrain: bool) -> Any:
        sampling = Sampling(constrain_calls=constrain)
        kernel = Kernel(smol.cpu, smol.dialect, tools, sampling=sampling, budgets=Budgets(max_steps=1))
        # None: the model answered in words (seed 61 writes the shopping list without python)
        return next((e for e in kernel.ask(question) if e.kind in ("call", "result")), None)

    def broken(event: Any) -> bool:
        return event is not None and event.kind == "result" and event.name == "?" and event.text.startswith(BROKEN)

    free = {q: first(q, constrain=False) for q in PYTHON_REQUESTS}
    constrained = {q: first(q, constrain=True) for q in PYTHON_REQUESTS}
    broken_free = [q for q in PYTHON_REQUESTS if broken(free[q])]
    assert len(broken_free) >= 2, free  # decoded free, the model writes calls that do not parse
    assert not [q for q in PYTHON_REQUESTS if broken(constrained[q])], constrained
    mended = [q for q in broken_free if constrained[q] is not None and constrained[q].kind == "call"]
    assert len(mended) >= 2, {q: constrained[q] for q in broken_free}  # the tool and the code are the model's


class _GrammarFirst:
    """llama.cpp's plain way, the reference: the grammar first in the chain, over every token (and
    no DRY: a forced call's grammar holds from its first token, and inside a call the chain has none)."""

    held = True  # a forced call's grammar holds from the first token

    def __init__(self, cpu: LlamaCPU, sampling: Sampling) -> None:
        self.lib = lib = cpu.lib
        self.chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        lib.llama_sampler_chain_add(
            self.chain, lib.llama_sampler_init_grammar(cpu._vocab, sampling.grammar.encode(), b"root")
        )
        lib.llama_sampler_chain_add(self.chain, lib.llama_sampler_init_greedy())

    def sample(self, ctx, index: int) -> int:
        return self.lib.llama_sampler_sample(self.chain, ctx, index)

    def free(self) -> None:
        self.lib.llama_sampler_free(self.chain)


# a calculator call the model would not write: its own choices are rejected token after token
ODD_BODY = (
    '"{\\"name\\": \\"calculator\\", \\"arguments\\": {\\"expression\\": \\"" [1-9] [0-9] " * 7 - " [1-9] "\\"}}"'
)


@pytest.mark.parametrize("body", [None, ODD_BODY], ids=["the models own call", "a call it would not write"])
def test_checking_the_chosen_token_first_decodes_what_the_grammar_first_chain_does(smol, specs, body, monkeypatch):
    """A forced call on llmos-smol, greedy with DRY, against llama.cpp's grammar-first chain."""
    sampling = {**model_sampling("llmos-smol").__dict__, **smol.dialect.forced_call(specs, body_rule=body)}
    sampling.pop("max_tokens")
    free = _decode(smol, "What is 15% of 1,240?", specs, **{**sampling, "grammar": None})
    fast = _decode(smol, "What is 15% of 1,240?", specs, **sampling)
    monkeypatch.setattr(smol.cpu, "_sampler", lambda s: _GrammarFirst(smol.cpu, s))
    reference = _decode(smol, "What is 15% of 1,240?", specs, **sampling)
    assert [p.token for p in fast] == [p.token for p in reference]
    assert fast[0].text == CALL and fast[-1].text == CALL_END
    call = json.loads("".join(p.text for p in fast[1:-1]))
    if body:  # the grammar overruled the model: the resampling path ran
        assert re.fullmatch(r"[1-9][0-9] \* 7 - [1-9]", call["arguments"]["expression"])
        assert [p.token for p in free] != [p.token for p in fast]
    else:
        assert call["name"] in {spec["name"] for spec in specs}


# a pinned call that repeats a pattern, then leaves the model one digit: it continues the pattern
REPEATING = (
    f'root ::= "{CALL}" "{{\\"name\\": \\"calculator\\", \\"arguments\\": {{\\"expression\\": '
    f'\\"1+2+1+2+1+2+1+2+" [0-9] [0-9]? "\\"}}}}"'
)
STRONG_DRY = {"dry_multiplier": 3.0, "dry_allowed_length": 2}


def test_dry_breaks_repeats_in_prose_and_leaves_calls_alone(smol, specs) -> None:
    """DRY is there for greedy loops in prose; code and JSON repeat by nature, so while the call
    grammar holds the chain picks without it (before this, DRY turned the digit below into a 2)."""
    pinned = {"grammar": REPEATING, "grammar_trigger": CALL, "forced_suffix": CALL_END}
    plain = _decode(smol, "What is 15% of 1,240?", specs, **pinned)
    strong = _decode(smol, "What is 15% of 1,240?", specs, **pinned, **STRONG_DRY)
    assert [p.token for p in strong] == [p.token for p in plain]
    assert '"1+2+1+2+1+2+1+2+1"' in "".join(p.text for p in plain)  # the model's own digit
    lazy = smol.dialect.call_grammar(specs)  # prose, with the call grammar waiting: DRY still bites
    story = "Write a short poem about the sea."
    assert [p.token for p in _decode(smol, story, specs, **lazy)] != [
        p.token for p in _decode(smol, story, specs, **lazy, **STRONG_DRY)
    ]


OWN = 'root ::= "yes" | "no"'


class _RecordingCPU(ScriptedCPU):
    """A scripted model that keeps the sampling of each step."""

    def __init__(self, outputs: list[str]) -> None:
        super().__init__(outputs)
        self.samplings: list[Sampling] = []

    def generate(self, sampling: Sampling):
        self.samplings.append(sampling)
        yield from super().generate(sampling)


@pytest.mark.parametrize(
    "sampling, applied",
    [(Sampling(), "the call grammar"), (Sampling(constrain_calls=False), None), (Sampling(grammar=OWN), OWN)],
    ids=["by default", "turned off", "a caller's own grammar"],
)
def test_which_grammar_the_kernel_decodes_a_step_with(sampling: Sampling, applied: str | None) -> None:
    tools = load_tools(allow={"calculator"})
    cpu = _RecordingCPU([f"Hello there.{llmos_dialect.END}"])
    list(Kernel(cpu, llmos_dialect.LlmosDialect(), tools, sampling=sampling).ask("hi"))
    got = cpu.samplings[0]
    if applied == "the call grammar":
        marker, end = llmos_dialect.CALL, llmos_dialect.CALL_END
        assert got.grammar == lazy_call_grammar([tools.tools["calculator"].spec()], marker)
        assert (got.grammar_trigger, got.forced_suffix) == (marker, end)
    else:
        assert (got.grammar, got.grammar_trigger) == (applied, "")


def test_a_held_call_refuses_the_vocabularys_control_tokens(smol, specs) -> None:
    """llama.cpp's grammar reads a control token by its text, so ``<repo_name>`` passed for a
    string's characters (llmos-smol wrote it inside a python cell, then prose and a new call)."""
    cpu = smol.cpu
    chain = cpu._sampler(Sampling(**smol.dialect.call_grammar(specs)))
    try:
        repo_name, word = cpu.token_id("<repo_name>"), cpu.tokenize("print", special=False)[0]
        assert cpu.is_control(repo_name) and chain.allowed(repo_name)  # prose before a call: anything
        for token in cpu.tokenize(CALL + '{"name": "python", "arguments": {"code": "x = 1', special=True):
            assert chain.allowed(token)
            chain.accept(token)
        assert _allowed(cpu, chain.grammar, repo_name)  # the grammar alone would take it
        assert chain.allowed(word) and not chain.allowed(repo_name) and not chain.allowed(cpu.token_id(CALL))
        logits = np.full(cpu.n_vocab, -10.0, dtype=np.float32)
        logits[[repo_name, cpu.token_id(CALL), word]] = (9.0, 8.0, 5.0)
        assert chain._pick(logits, constrained=True) == word  # the model's favourites are refused
    finally:
        chain.free()
