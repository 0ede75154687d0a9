"""llmos-smol, the shipped LoRA fine-tune of SmolLM2, through the real kernel, apps and terminal.

The issue's checks as a new user meets them: a greeting is answered in words, with no call and a
turn that ends; "What is 15% of 1,240?" goes through the calculator to 186.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import TmuxScreen, smollm2_model

from llmos.kernel import Budgets, Kernel
from llmos.models import FINE_TUNES, local_model, open_machine

MAIN = "import sys; from llmos_shell.cli import main; sys.exit(main())"


@pytest.fixture(scope="module")
def machine():
    smollm2_model()  # the base comes from its package
    machine = open_machine("llmos-smol", n_ctx=4096)
    yield machine
    machine.cpu.close()


@pytest.fixture(scope="module")
def tools():
    from llmos_tools import load_tools

    return load_tools()


def test_llmos_smol_is_listed_and_opens_as_the_base_with_its_adapter_merged(machine) -> None:
    out = subprocess.run([sys.executable, "-c", MAIN, "models", "--json"], capture_output=True, text=True, check=True)
    entry = next(e for e in json.loads(out.stdout) if e["name"] == "llmos-smol")
    assert entry["kind"] == "fine-tune" and entry["path"].endswith("llmos-smol.lora.gguf")
    assert entry["size"] < 25e6  # the repository holds only what llmos adds
    # the adapter folded into the base once (llmos.cpu.merge), into the cache, not the repository
    assert machine.dialect.name == "smol" and machine.cpu.path == local_model("llmos-smol").path
    assert machine.cpu.path.name.startswith("llmos-smol-Q8_0-") and FINE_TUNES["llmos-smol"].files()[1].is_file()


def test_a_greeting_is_answered_without_a_call(machine, tools) -> None:
    kernel = Kernel(machine.cpu, machine.dialect, tools, budgets=Budgets(max_steps=3))
    events = list(kernel.ask("hello, who are you?"))
    assert not [e for e in events if e.kind == "call"]
    assert events[-1].reason == "answer" and events[-1].answer.strip()


@pytest.fixture(scope="module")
def fifteen_percent(machine, tools):
    kernel = Kernel(machine.cpu, machine.dialect, tools, budgets=Budgets(max_steps=3))
    return list(kernel.ask("What is 15% of 1,240?"))


def test_fifteen_percent_of_1240_goes_through_the_calculator(fifteen_percent) -> None:
    calls = [e for e in fifteen_percent if e.kind == "call"]
    assert calls and calls[0].name == "calculator"
    assert any(e.kind == "result" and e.text == "186" for e in fifteen_percent)


def test_the_answer_to_fifteen_percent_of_1240_states_186(fifteen_percent) -> None:
    assert "186" in fifteen_percent[-1].answer


def test_the_terminal_assistant_greets_and_calculates_with_the_default_model(tmp_path) -> None:
    """``llmos tui`` as a new user starts it: no model named, so llmos-smol."""
    options = f"--store {tmp_path / 's.db'}"
    screen = TmuxScreen(f"env -u LLMOS_MODEL LLMOS_HOME={tmp_path / 'home'} {sys.executable} -c '{MAIN}' tui {options}")
    try:
        assert "· llmos-smol" in screen.shows("llmos — session ")  # the header names the model
        screen.type("hello, who are you?")
        screen.shows("hello, who are you?")
        screen.type("Enter")  # apart: a burst of keys with its Enter can read as one paste
        # the RAM meter counts the answer's page once the turn is over: system, question, answer
        greeted = screen.shows("· 3 pages", timeout=60)
        assert "Hello" in greeted and "assistant" in greeted and "calculator" not in greeted
        screen.type("What is 15% of 1,240?")
        screen.shows("What is 15% of 1,240?")
        screen.type("Enter")
        shown = screen.shows("186", timeout=120)
        assert "calculator" in shown
    finally:
        screen.close()
