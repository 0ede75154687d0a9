"""How to test a plugin: a scripted model calls the tools through the real kernel."""

from __future__ import annotations

from llmos_notes import Notes, word_count

from llmos import Kernel, ScriptedCPU, get_dialect
from llmos import scripted_call as call


def test_a_scripted_model_adds_and_finds_a_note(tmp_path):
    tools = [word_count, *Notes(tmp_path / "notes.jsonl").tools()]
    script = [call("notes_add", text="buy milk", tags=["shopping"]), call("notes_search", query="shopping"), "Done."]
    kernel = Kernel(ScriptedCPU(script), get_dialect("llmos"), tools)
    events = list(kernel.ask("Remember to buy milk, then check it is there."))
    results = [e for e in events if e.kind == "result"]
    assert [r.text for r in results] == ["noted (1 notes)", "- buy milk"]
    assert events[-1].kind == "done" and events[-1].answer == "Done."


def test_the_tools_declare_their_effects(tmp_path):
    add, search = Notes(tmp_path / "n.jsonl").tools()
    assert {str(e) for e in add.effects} == {"writes"} and not search.effects
    assert word_count("three little words") == "3"  # a @tool is still a plain function
