"""``Kernel.ask(None)``: continue a conversation without a user turn (what ``--resume`` needs).

The model is a :class:`~llmos.testing.ScriptedCPU`; what is under test is which turn the
kernel continues from, and what it refuses to continue.
"""

from __future__ import annotations

import json
import time

import pytest
from llmos_tools import Effect, tool

from llmos.cpu.base import Piece
from llmos.dialects.llmos import CALL, CALL_END, END, LlmosDialect
from llmos.kernel import Budgets, Kernel
from llmos.testing import ScriptedCPU

RUNS: list[str] = []


@tool
def echo(text: str) -> str:
    """Echo the text."""
    RUNS.append(f"echo {text}")
    return text


@tool(effects={Effect.WRITES})
def save(text: str) -> str:
    """Write the text to a file."""
    RUNS.append(f"save {text}")
    return "saved"


def call(name: str, **arguments) -> str:
    return f"{CALL}{json.dumps({'name': name, 'arguments': arguments})}{CALL_END}"


def kernel(*outputs: str, **options) -> Kernel:
    return Kernel(ScriptedCPU(list(outputs)), LlmosDialect(), [echo, save], **options)


def interrupt(k: Kernel, text: str, at: str) -> None:
    """Ask, then stop consuming at the first event of kind ``at`` (as a killed shell would)."""
    events = k.ask(text)
    for event in events:
        if event.kind == at:
            break
    events.close()


def roles(k: Kernel) -> list[str]:
    return [t.role for t in k.turns]


def test_continue_after_a_result_generates_the_next_step_without_a_user_turn():
    k = kernel(call("echo", text="42"))
    interrupt(k, "What is 6*7?", at="result")
    assert roles(k) == ["system", "user", "assistant", "result"]
    k.cpu.outputs.append(f"It is 42.{END}")
    events = list(k.ask(None))
    assert events[-1].kind == "done" and (events[-1].reason, events[-1].answer) == ("answer", "It is 42.")
    assert roles(k) == ["system", "user", "assistant", "result", "assistant"]
    last_load = k.cpu.loads[-1]
    assert [s.text for s in last_load if s.tag == "user"] == ["What is 6*7?"]  # no prompt was added


def test_continue_after_a_user_turn_answers_it():
    k = kernel()
    interrupt(k, "hello", at="error")  # the scripted model had nothing: a backend error, no chunk
    assert roles(k) == ["system", "user"]
    k.cpu.outputs.append(f"hi{END}")
    assert list(k.ask(None))[-1].answer == "hi"
    assert roles(k) == ["system", "user", "assistant"]


def test_continue_a_chunk_cut_by_the_token_budget():
    k = kernel("word " * 50, budgets=Budgets(max_step_tokens=5))
    events = list(k.ask("go"))
    assert events[-1].reason == "budget" and k.turns[-1].meta["stop"] == "cut"
    k.budgets = Budgets()
    k.cpu.outputs.append(f" done{END}")
    assert list(k.ask(None))[-1].answer == "done"
    assert roles(k)[-3:] == ["user", "assistant", "assistant"]


def test_a_trapped_read_only_call_without_its_result_runs_on_continue():
    RUNS.clear()
    k = kernel(call("echo", text="7"))
    interrupt(k, "go", at="call")  # killed while the tool ran: no result turn
    assert roles(k)[-1] == "assistant" and k.turns[-1].meta["stop"] == "call" and RUNS == []
    k.cpu.outputs.append(f"7{END}")
    events = list(k.ask(None))
    result = next(e for e in events if e.kind == "result")
    assert (result.name, result.text, result.id) == ("echo", "7", "call_1") and RUNS == ["echo 7"]
    assert events[-1].answer == "7" and events[-1].steps == 1


def test_a_trapped_call_with_effects_is_not_run_twice_blindly():
    RUNS.clear()
    k = kernel(call("save", text="report"))
    interrupt(k, "go", at="call")
    k.cpu.outputs.append(f"Checked.{END}")
    events = list(k.ask(None))
    result = next(e for e in events if e.kind == "result")
    assert result.is_error and "may or may not have taken effect" in result.text and RUNS == []
    assert events[-1].answer == "Checked."


@pytest.mark.parametrize(
    ("output", "stop", "message"),
    [(f"{CALL}{{not json{CALL_END}", "call", "not valid JSON"), ("<|result|>x", "malformed", "only the kernel")],
)
def test_a_trapped_bad_call_becomes_its_error_result_on_continue(output, stop, message):
    k = kernel(output)
    interrupt(k, "go", at="result")
    k.turns.pop()  # as if killed before the error result was recorded
    assert k.turns[-1].meta["stop"] == stop
    k.cpu.outputs.append(f"sorry{END}")
    result = next(e for e in k.ask(None) if e.kind == "result")
    assert result.is_error and message in result.text


@pytest.mark.parametrize("answered", [False, True])
def test_nothing_to_continue_raises_at_once(answered):
    k = kernel(f"done{END}")
    if answered:
        list(k.ask("go"))
    with pytest.raises(ValueError, match="nothing to continue"):
        k.ask(None)  # raised by the call itself, before any event
    assert not k.can_continue()
    assert roles(k) == (["system", "user", "assistant"] if answered else ["system"])


def test_a_chunk_cut_by_the_time_budget_is_a_budget_stop_not_an_answer():
    class Slow(ScriptedCPU):
        def generate(self, sampling):
            for _ in range(200):
                time.sleep(0.01)
                yield Piece(None, "tick ")

    k = Kernel(Slow([]), LlmosDialect(), [echo], budgets=Budgets(max_seconds=0.1))
    events = list(k.ask("go"))
    assert (events[-2].code, events[-1].reason) == ("budget_time", "budget")
    assert k.turns[-1].meta["stop"] == "cut" and k.can_continue()
