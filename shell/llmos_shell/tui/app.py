"""The terminal assistant: a textual chat on the kernel's event stream.

Threads
-------
Everything that touches the session (open, ask, close) runs on one kernel thread, so the
session store is always used from the thread that opened it (sqlite3's rule) and the kernel
never blocks the screen. The kernel thread posts each event to the app's event loop without
waiting (``call_soon_threadsafe``: order kept, and no deadlock while the app shuts down).
An approval blocks the kernel thread until the modal answers (or the app quits: denied).

Contract
--------
* ``open_session(resume, approver)`` builds a :class:`~llmos.session.Session` (``resume`` is a
  session id or None); the app calls it on the kernel thread. Tests pass a factory around a
  ScriptedCPU; :func:`llmos_shell.tui.run_tui` passes one around :meth:`Session.open`.
* Keys: ctrl+n new session, escape cancel generation, ctrl+y copy the last answer,
  ctrl+o sessions (reopen, export), ctrl+e export this session, ctrl+q quit.
* Cancel stops decoding at the next token (closing the kernel's generator closes the CPU's
  stream); the partial reply is not kept in the conversation.

Not covered: editing or deleting sessions, inline images (artifacts are file links).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Input

from llmos_shell.tui.widgets import (
    ApprovalScreen,
    AssistantMessage,
    Notice,
    RamMeter,
    SessionsScreen,
    ToolPanel,
    UserMessage,
    context_tokens,
)

SessionFactory = Callable[[str | None, Callable[[Any], bool]], Any]
APPROVAL_TIMEOUT_S = 600.0  # an unanswered approval is a denial


class ChatApp(App[None]):
    TITLE = "llmos"
    CSS = """
    #log { height: 1fr; padding: 0 1; }
    #prompt { dock: bottom; margin: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+n", "new_session", "New"),
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+y", "copy_answer", "Copy"),
        Binding("ctrl+o", "sessions", "Sessions"),
        Binding("ctrl+e", "export", "Export"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, open_session: SessionFactory, store_path: Path, resume: str | None = None) -> None:
        super().__init__()
        self.open_session, self.store_path, self.resume = open_session, store_path, resume
        self.session: Any = None
        self.busy = False
        self.last_answer = ""
        self._kernel = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmos-kernel")
        self._cancel = threading.Event()
        self._answers: queue.Queue[bool] | None = None  # the pending approval, if any
        self._message: AssistantMessage | None = None
        self._panels: dict[str, ToolPanel] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield VerticalScroll(id="log")
        yield RamMeter("RAM …", id="ram")
        yield Input(placeholder="Ask anything (enter sends)", id="prompt")
        yield Footer()

    def on_mount(self) -> None:
        self._app_loop = asyncio.get_running_loop()
        self._switch(self.resume)
        self.query_one(Input).focus()

    # -- the kernel thread ------------------------------------------------------------

    def _submit(self, work: Callable[[], Any]) -> Future[Any]:
        future = self._kernel.submit(work)
        future.add_done_callback(self._report_failure)
        return future

    def _report_failure(self, future: Future[Any]) -> None:
        error = future.exception()
        if error is not None:
            self._post(self._failed, f"{type(error).__name__}: {error}")

    def _switch(self, resume: str | None) -> None:
        """Close the current session (if any) and open another, on the kernel thread."""
        self.query_one("#log").remove_children()
        self._panels.clear()

        def work() -> None:
            if self.session is not None:
                self.session.close()
                self.session = None
            self.session = self.open_session(resume, self._approve)
            shown = [
                (t.role, visible_text(self.session.kernel.dialect, t) if t.role == "assistant" else t.text)
                for t in self.session.kernel.turns
            ]
            machine = self.session.machine
            model = "" if machine is None else Path(machine.spec).name if Path(machine.spec).is_file() else machine.spec
            self._post(self._opened, self.session.id, shown, model)

        self._submit(work)

    def _post(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback`` on the app thread, without waiting (the app may be shutting down)."""

        def run() -> None:
            with self._context():  # as call_from_thread does: active app and message pump set
                callback(*args)

        with contextlib.suppress(RuntimeError):  # the loop is closed: the app is gone, nobody to tell
            self._app_loop.call_soon_threadsafe(run)

    def _ask(self, text: str) -> None:
        try:
            for event in self.session.ask(text):
                if self._cancel.is_set():
                    break  # closing the generator stops decoding
                self._post(self._on_event, event)
        finally:
            self._post(self._turn_over, self._cancel.is_set())

    def _approve(self, request: Any) -> bool:
        """Called by the kernel (kernel thread): show the modal, wait for the person."""
        answers: queue.Queue[bool] = queue.Queue(maxsize=1)
        self._answers = answers
        tool = self.session.tools.tools.get(request.name)
        effects = ", ".join(sorted(str(e) for e in tool.effects)) if tool and tool.effects else "read-only"

        def answer(allowed: bool | None) -> None:
            with contextlib.suppress(queue.Full):  # the first answer counts (the modal, or quitting)
                answers.put_nowait(bool(allowed))

        self._post(lambda: self.push_screen(ApprovalScreen(request, effects), answer))
        try:
            return answers.get(timeout=APPROVAL_TIMEOUT_S)
        except queue.Empty:
            return False
        finally:
            self._answers = None

    # -- events, on the app thread ----------------------------------------------------

    def _opened(self, session_id: str, turns: list[tuple[str, str]], model: str) -> None:
        self.sub_title = f"session {session_id} · {model}" if model else f"session {session_id}"
        log = self.query_one("#log")
        for role, text in turns:  # a reopened session shows its conversation
            if role == "user":
                log.mount(UserMessage(text))
            elif role == "assistant" and text.strip():
                log.mount(AssistantMessage(text))
            elif role == "result":
                log.mount(Notice(f"[result] {text[:300]}", markup=False))
        self._update_ram()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text or self.busy or self.session is None:
            return
        event.input.value = ""
        self.busy = True
        self._cancel.clear()
        log = self.query_one("#log")
        log.mount(UserMessage(text))
        self._message = AssistantMessage()
        log.mount(self._message)
        log.scroll_end(animate=False)
        self._submit(lambda: self._ask(text))

    def _on_event(self, event: Any) -> None:
        log = self.query_one("#log")
        kind = event.kind
        if kind == "token" and self._message is not None:
            self._message.add(event.text)
        elif kind == "call":
            panel = ToolPanel(event.id, event.name, event.arguments)
            self._panels[event.id] = panel
            log.mount(panel)
            self._message = AssistantMessage()  # text after the call goes below the panel
            log.mount(self._message)
        elif kind == "result" and event.id in self._panels:
            self._panels[event.id].finish(event.text, event.is_error, event.seconds, event.artifacts)
        elif kind == "error":
            log.mount(Notice(f"[{event.code}] {event.message}", markup=False))
        elif kind == "done":
            self.last_answer = event.answer
        if kind not in ("token", "done"):
            self._update_ram()  # at "done" the answer is not on screen yet: _turn_over counts it
        log.scroll_end(animate=False)

    @work(group="turn-over")  # a worker: textual cancels it if the app closes before the redraw is done
    async def _turn_over(self, cancelled: bool) -> None:
        # the meter counting the answer's page is what says the turn is over, so the whole answer
        # is on screen first (a pending partial redraw would otherwise land after the meter)
        if self._message is not None:
            await self._message.flush()
        if cancelled:
            self.query_one("#log").mount(Notice("(cancelled)"))
        self.busy = False
        self._update_ram()

    def _failed(self, message: str) -> None:
        self.busy = False
        self.query_one("#log").mount(Notice(f"error: {message}", markup=False))

    def _update_ram(self) -> None:
        if self.session is None:
            return
        cpu = self.session.kernel.cpu
        self.query_one(RamMeter).show(context_tokens(cpu), int(cpu.n_ctx), len(self.session.kernel.turns))

    # -- actions ----------------------------------------------------------------------

    def action_cancel(self) -> None:
        if self.busy:
            self._cancel.set()

    def action_new_session(self) -> None:
        self._cancel.set()
        self._switch(None)

    def action_copy_answer(self) -> None:
        if self.last_answer:
            self.copy_to_clipboard(self.last_answer)
            self.notify("answer copied")

    def action_sessions(self) -> None:
        from llmos.store import SessionStore

        with SessionStore(self.store_path) as store:
            sessions = store.sessions(limit=100)

        def reopen(session_id: str | None) -> None:
            if session_id:
                self._cancel.set()
                self._switch(session_id)

        self.push_screen(SessionsScreen(sessions, self.export_session), reopen)

    def action_export(self) -> None:
        if self.session is not None:
            self.export_session(self.session.id)

    def export_session(self, session_id: str) -> Path:
        """Write the stored session as JSON into the current folder."""
        from llmos.store import SessionStore

        with SessionStore(self.store_path) as store:
            data = store.export(session_id)
        path = Path.cwd() / f"llmos-session-{session_id}.json"
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        self.notify(f"exported to {path}")
        return path

    async def action_quit(self) -> None:
        self._cancel.set()
        if self._answers is not None:
            with contextlib.suppress(queue.Full):
                self._answers.put_nowait(False)  # release a kernel thread waiting on an approval
        self.exit()

    def on_unmount(self) -> None:
        self._cancel.set()
        if self._answers is not None:
            with contextlib.suppress(queue.Full):
                self._answers.put_nowait(False)
        session = self.session
        if session is not None:
            self._kernel.submit(session.close)
        self._kernel.shutdown(wait=False)  # the kernel thread stops at its next event; never block the screen


def visible_text(dialect: Any, turn: Any) -> str:
    """What a person saw of a stored assistant chunk: the dialect's markup removed."""
    from llmos.cpu.base import Piece
    from llmos.dialects.base import Text

    parser = dialect.parser(controls=False)
    events = [*parser.feed(Piece(None, turn.text)), *parser.finish()]
    return "".join(e.text for e in events if isinstance(e, Text))
