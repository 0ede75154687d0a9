"""The terminal assistant: Pilot tests, SVG snapshots, and one run in a real terminal (tmux).

The model is a ScriptedCPU (what is under test is the app around the kernel); the kernel,
the session store, the policy and textual are real.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import TmuxScreen, need_module

need_module("textual")

from llmos_shell.tui.app import ChatApp  # noqa: E402
from llmos_shell.tui.widgets import (  # noqa: E402
    ApprovalScreen,
    AssistantMessage,
    Notice,
    RamMeter,
    SessionsScreen,
    ToolPanel,
    UserMessage,
)
from llmos_tools import Effect, Registry, tool  # noqa: E402
from textual.widgets import Input  # noqa: E402

from llmos.dialects.llmos import CALL, CALL_END, END, LlmosDialect  # noqa: E402
from llmos.kernel import Kernel  # noqa: E402
from llmos.models import Machine  # noqa: E402
from llmos.policy import Decision, Policy  # noqa: E402
from llmos.session import Session  # noqa: E402
from llmos.store import SessionStore  # noqa: E402
from llmos.testing import ScriptedCPU  # noqa: E402

SIZE = (100, 30)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # textual runs on asyncio


GATE = threading.Event()


@tool(effects={Effect.SENDS_OUT})
def send(to: str, text: str) -> str:
    """Send a message."""
    return f"sent to {to}"


@tool
def gate(wait: float) -> str:
    """Wait until the test opens the gate (bounded)."""
    GATE.wait(timeout=wait)
    return "opened"


def call(name: str, **arguments) -> str:
    return f"{CALL}{json.dumps({'name': name, 'arguments': arguments})}{CALL_END}"


def factory(
    store_path: Path | None, *scripts: list[str], overrides: dict | None = None, session_id: str = "", policy=None
):
    """Open sessions on a ScriptedCPU, each with the next script; ``store_path=None`` keeps nothing."""
    queue = list(scripts)

    def open_session(resume, approver):
        cpu = ScriptedCPU(queue.pop(0) if queue else [], n_ctx=2048, piece_size=2)
        registry = Registry()
        for t in (send, gate):
            registry.add(t)
        store = SessionStore(store_path) if store_path else None
        turns = store.load_turns(resume) if (store and resume) else None
        sid = resume or (store.new_session(title="scripted", model="scripted") if store else session_id)
        kernel = Kernel(
            cpu,
            LlmosDialect(),
            registry,
            session_id=sid,
            turns=turns,
            policy=policy or Policy(overrides=overrides or {}),
            approver=approver,
        )
        return Session(kernel, store, sid, Machine(cpu, kernel.dialect, "scripted"))

    return open_session


async def until(pilot, condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the app"
        await pilot.pause(0.02)
    await pilot.pause(0.1)  # let the last redraws land


async def ask(pilot, text: str) -> None:
    app = pilot.app
    await until(pilot, lambda: app.session is not None)
    app.query_one(Input).value = text
    await pilot.press("enter")
    await until(pilot, lambda: any(str(m.render()) == f"> {text}" for m in app.query(UserMessage)))


def answers(app) -> list[str]:
    return [m.text for m in app.query(AssistantMessage) if m.text]


@pytest.mark.anyio
async def test_typing_sends_and_tokens_stream_in(tmp_path):
    app = ChatApp(
        factory(tmp_path / "s.db", [f"Hello **there**, see ![x](http://evil.test/a.png){END}"]), tmp_path / "s.db"
    )
    seen = []
    async with app.run_test(size=SIZE) as pilot:
        original = app._on_event
        app._on_event = lambda event: (seen.append(event.kind), original(event))
        await until(pilot, lambda: app.session is not None)
        await pilot.press(*"hi", "enter")
        await until(pilot, lambda: not app.busy and app.last_answer)
        assert seen.count("token") > 5  # streamed piece by piece
        assert answers(app) == ["Hello **there**, see ![x](http://evil.test/a.png)"]
        message = app.query_one(AssistantMessage)
        assert "http://evil.test/a.png" in message.source and "![" not in message.source  # shown, not an image
        assert app.query_one(Input).value == ""


@pytest.mark.anyio
async def test_the_meter_counts_the_answers_page_only_once_the_whole_answer_is_on_screen(tmp_path):
    # the meter's page count is what tells a person (and the tmux tests) that the turn is over
    text = "Hello there, this answer streams in many small pieces and is shown whole at the end."
    app = ChatApp(factory(None, [text + END], session_id="x"), None)
    seen: list[tuple[int, str]] = []
    async with app.run_test(size=SIZE) as pilot:
        meter = app.query_one(RamMeter)
        show = meter.show

        def record(used: int, n_ctx: int, pages: int) -> None:
            blocks = [b for m in app.query(AssistantMessage) for b in m.query("MarkdownBlock")]
            seen.append((pages, " ".join(str(b.render()) for b in blocks)))
            show(used, n_ctx, pages)

        meter.show = record
        await until(pilot, lambda: app.session is not None)
        await pilot.press(*"hi", "enter")
        await until(pilot, lambda: not app.busy and app.last_answer)
    counted = [shown for pages, shown in seen if pages == 3]  # system, question, answer
    assert counted and all(shown == text for shown in counted)


@pytest.mark.anyio
async def test_a_tool_call_shows_as_a_collapsible_panel_with_timing(tmp_path):
    script = [f"Let me wait. {call('gate', wait=0.01)}", f"Done.{END}"]
    app = ChatApp(factory(tmp_path / "s.db", script), tmp_path / "s.db")
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot, "go")
        await until(pilot, lambda: not app.busy)
        panel = app.query_one(ToolPanel)
        assert panel.title.startswith("✓ gate · ") and panel.title.endswith(" s")
        assert "opened" in str(panel.result.render())
        assert answers(app) == ["Let me wait. ", "Done."]
        await pilot.click(f"#{panel.id} CollapsibleTitle" if panel.id else "CollapsibleTitle")
        assert panel.collapsed
        assert "RAM" in str(app.query_one("#ram").render()) and "/2048 tokens" in str(app.query_one("#ram").render())


@pytest.mark.anyio
@pytest.mark.parametrize(("key", "allowed"), [("y", True), ("n", False)])
async def test_an_approval_shows_what_goes_where_and_blocks_until_answered(tmp_path, key, allowed):
    script = [call("send", to="bob@example.com", text="the plan"), f"Ok.{END}"]
    app = ChatApp(factory(tmp_path / "s.db", script, overrides={"send": "ask"}), tmp_path / "s.db")
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot, "mail bob")
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen))
        shown = " ".join(str(w.render()) for w in app.screen.query("Label, Static"))
        assert "tool send (sends_out)" in shown
        assert "bob@example.com" in shown and "the plan" in shown
        assert app.busy  # the kernel waits for the person
        await pilot.press(key)
        await until(pilot, lambda: not app.busy)
        panel = app.query_one(ToolPanel)
        assert ("sent to bob@example.com" in str(panel.result.render())) is allowed
        assert panel.has_class("error") is not allowed


@pytest.mark.anyio
async def test_cancel_stops_the_turn(tmp_path):
    GATE.clear()
    script = [call("gate", wait=5), "This text must never appear." * 5 + END]
    app = ChatApp(factory(tmp_path / "s.db", script), tmp_path / "s.db")
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot, "go")
        await until(pilot, lambda: bool(app.query(ToolPanel)))
        await pilot.press("escape")
        GATE.set()
        await until(pilot, lambda: not app.busy)
        assert any("cancelled" in str(n.render()) for n in app.query(Notice))
        assert not any("never appear" in text for text in answers(app))


@pytest.mark.anyio
async def test_sessions_can_be_listed_reopened_and_exported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "s.db"
    app = ChatApp(factory(store, [f"First answer.{END}"], [f"Second answer.{END}"], []), store)
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot, "first question")
        await until(pilot, lambda: not app.busy)
        first = app.session.id
        await pilot.press("ctrl+n")
        await until(pilot, lambda: app.session is not None and app.session.id != first)
        await ask(pilot, "second question")
        await until(pilot, lambda: not app.busy)
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen))
        await pilot.press("down", "e")  # the older session, exported ...
        assert json.loads((tmp_path / f"llmos-session-{first}.json").read_text())["session"]["id"] == first
        await pilot.press("enter")  # ... then reopened
        await until(pilot, lambda: app.session is not None and app.session.id == first)
        assert answers(app) == ["First answer."]
        assert "session " + first in app.sub_title


# -- snapshots --------------------------------------------------------------------------


class AlwaysAsk(Policy):
    """The real policy's wording changes as it grows; the snapshot pins one reason."""

    def decide(self, tool, arguments, *, turns):
        return Decision("ask", ("configured: send -> ask",))


def snapshot_app(*script: str, policy=None) -> ChatApp:
    return ChatApp(factory(None, list(script), session_id="snapshot", policy=policy), Path("unused.db"))


async def still_cursor(pilot) -> None:
    pilot.app.query_one(Input).cursor_blink = False  # a blinking cursor makes snapshots flaky


def test_snapshot_chat_with_a_tool_panel(snap_compare):
    app = snapshot_app(f"Checking. {call('gate', wait=0.01)}", f"The gate is **open**.{END}")

    async def run_before(pilot):
        await still_cursor(pilot)
        await ask(pilot, "is the gate open?")
        await until(pilot, lambda: not app.busy)
        panel = app.query_one(ToolPanel)
        panel.title = "✓ gate · 0.01 s"  # timing varies; the snapshot fixes it

    assert snap_compare(app, run_before=run_before, terminal_size=SIZE)


def test_snapshot_approval_modal(snap_compare):
    app = snapshot_app(call("send", to="bob@example.com", text="the plan"), f"Ok.{END}", policy=AlwaysAsk())

    async def run_before(pilot):
        await still_cursor(pilot)
        await ask(pilot, "mail bob the plan")
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen))

    assert snap_compare(app, run_before=run_before, terminal_size=SIZE)


# -- a real terminal ----------------------------------------------------------------------

TMUX_APP = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_tui import END, factory
from llmos_shell.tui.app import ChatApp
ChatApp(factory(Path({store!r}), ["Hello from a real terminal." + END]), Path({store!r})).run()
"""


def test_it_runs_in_a_real_terminal(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(TMUX_APP.format(tests=str(Path(__file__).parent), store=str(tmp_path / "s.db")))
    screen = TmuxScreen(f"{sys.executable} {script}")
    try:
        screen.shows("Ask anything")
        screen.type("hello")
        screen.shows("hello")
        screen.type("Enter")  # apart: a burst of keys with its Enter can read as one paste (it did, once in CI)
        shown = screen.shows("Hello from a real terminal.")
        assert "> hello" in shown and "RAM" in shown and "Quit" in shown
        screen.type("C-q")
        deadline = time.monotonic() + 10
        while screen.alive():
            assert time.monotonic() < deadline, "the app did not quit on ctrl+q"
            time.sleep(0.2)
    finally:
        screen.close()
