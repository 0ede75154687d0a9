"""The pieces of the chat screen: messages, tool panels, the RAM meter, and the two modals.

Model text is untrusted: it is rendered as Markdown after :func:`~llmos.policy.render.render_safe`
turned every link and image into visible text, and the Markdown widget is told not to open
links, so nothing the model wrote is ever fetched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Collapsible, Label, Markdown, OptionList, Static
from textual.widgets.option_list import Option

from llmos.policy.render import render_safe

if TYPE_CHECKING:
    from textual.await_complete import AwaitComplete


class UserMessage(Static):
    DEFAULT_CSS = "UserMessage { margin: 1 0 0 0; padding: 0 1; background: $boost; color: $text; }"

    def __init__(self, text: str) -> None:
        super().__init__(escape(f"> {text}"), markup=True)


class AssistantMessage(Markdown):
    """Model text that grows as tokens stream in; redrawn at most ~20 times a second."""

    DEFAULT_CSS = "AssistantMessage { margin: 0 0 0 2; padding: 0; }"

    def __init__(self, text: str = "") -> None:
        super().__init__(render_safe(text), open_links=False)
        self.text = text
        self._pending = False

    def add(self, piece: str) -> None:
        self.text += piece
        if not self._pending:
            self._pending = True
            self.set_timer(0.05, self.flush)

    def flush(self) -> AwaitComplete:
        """Redraw with all text so far; await the result to know it is on screen (parsing is async)."""
        self._pending = False
        return self.update(render_safe(self.text))


class ToolPanel(Collapsible):
    """One tool call: its arguments, then its result, artifacts and timing."""

    DEFAULT_CSS = """
    ToolPanel { margin: 0 0 0 2; border-left: thick $accent; }
    ToolPanel.error { border-left: thick $error; }
    ToolPanel Static { padding: 0 1; }
    """

    def __init__(self, call_id: str, name: str, arguments: dict[str, Any]) -> None:
        self.call_id, self.tool_name = call_id, name
        self.arguments = Static(escape(json.dumps(arguments, ensure_ascii=False)), classes="arguments")
        self.result = Static("running…", classes="result")
        super().__init__(self.arguments, self.result, title=f"⚙ {name} · running…", collapsed=False)

    def finish(self, text: str, is_error: bool, seconds: float, artifacts: list[str]) -> None:
        shown = text if len(text) <= 2000 else text[:2000] + " …"
        links = "".join(f"\n📎 [link={Path(p).resolve().as_uri()}]{escape(p)}[/link]" for p in artifacts)
        self.result.update(escape(shown) + links)
        self.title = f"{'✗' if is_error else '✓'} {self.tool_name} · {seconds:.2f} s"
        self.set_class(is_error, "error")


class Notice(Static):
    DEFAULT_CSS = "Notice { margin: 0 0 0 2; color: $text-muted; }"


class RamMeter(Static):
    """Context use: tokens in RAM against the window, free tokens, resident pages (turns, for now)."""

    DEFAULT_CSS = "RamMeter { height: 1; padding: 0 1; background: $panel; }"

    def show(self, used: int, n_ctx: int, pages: int) -> None:
        width = 20
        filled = min(width, round(width * used / n_ctx)) if n_ctx else 0
        bar = "█" * filled + "░" * (width - filled)
        self.update(f"RAM {bar} {used}/{n_ctx} tokens · {max(0, n_ctx - used)} free · {pages} pages")


def context_tokens(cpu: Any) -> int:
    """Tokens in the CPU's context now: exact for llama.cpp, estimated for text backends."""
    from llmos.cpu.base import TokenCPU

    if isinstance(cpu, TokenCPU):
        return len(cpu.tokens)
    loads = getattr(cpu, "loads", None)
    if loads:
        return sum(cpu.count_tokens(segment.text) for segment in loads[-1])
    return int(cpu.counters.context_tokens)


class ApprovalScreen(ModalScreen[bool]):
    """Shows exactly which tool gets which arguments, and why the policy asks; y allows, n denies."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Allow"),
        Binding("n,escape", "answer(False)", "Deny"),
    ]
    DEFAULT_CSS = """
    ApprovalScreen { align: center middle; }
    ApprovalScreen > Vertical { width: 80%; height: auto; max-height: 80%; border: thick $warning; padding: 1 2;
                                background: $surface; }
    ApprovalScreen #arguments { background: $boost; padding: 0 1; margin: 1 0; }
    ApprovalScreen Horizontal { height: auto; }
    ApprovalScreen Button { margin-right: 2; }
    """

    def __init__(self, request: Any, effects: str) -> None:
        super().__init__()
        self.request, self.effects = request, effects

    def compose(self) -> ComposeResult:
        request = self.request
        with Vertical():
            yield Label(f"[b]Allow this call?[/b]  tool [b]{escape(request.name)}[/b] ({escape(self.effects)})")
            yield Static(f"why asked: {escape(request.reason)}")
            yield Static(escape(json.dumps(request.arguments, ensure_ascii=False, indent=2)), id="arguments")
            yield Label(f"approval bound to these exact arguments: {request.digest[:16]}…")
            with Horizontal():
                yield Button("Allow (y)", id="allow", variant="warning")
                yield Button("Deny (n)", id="deny", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "allow")

    def action_answer(self, allowed: bool) -> None:
        self.dismiss(allowed)


class SessionsScreen(ModalScreen[str | None]):
    """Stored sessions, newest first: enter reopens one, e exports it, escape goes back."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss_none", "Back"),
        Binding("e", "export", "Export"),
    ]
    DEFAULT_CSS = """
    SessionsScreen { align: center middle; }
    SessionsScreen > Vertical { width: 90%; height: 80%; border: thick $accent; background: $surface; }
    """

    def __init__(self, sessions: list[Any], export: Any) -> None:
        super().__init__()
        self.sessions, self.export = sessions, export

    def compose(self) -> ComposeResult:
        options = [Option(describe_session(s), id=s.id) for s in self.sessions]
        with Vertical():
            yield Label("Sessions: enter reopens, e exports, escape goes back")
            yield OptionList(*options, id="sessions")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_export(self) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is not None:
            self.export(options.get_option_at_index(options.highlighted).id)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


def describe_session(info: Any) -> str:
    return f"{info.id}  {info.created[:16].replace('T', ' ')}  {info.turns:>3} turns  {info.title or '(untitled)'}"
