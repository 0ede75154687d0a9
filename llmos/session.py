"""A session: a kernel whose turns and events are written to the session store as they happen.

This is the Python front door::

    from llmos.session import Session
    with Session.open(model="path/to/model.gguf", tools=["calculator"]) as session:
        for event in session.ask("What is 15% of 1,240?"):
            ...

``Session.open(machine=...)`` takes a :class:`~llmos.models.Machine` already opened (to
share one loaded model between sessions); it stays the caller's to close. ``ask(None)``
continues the conversation without a user turn (see :meth:`llmos.kernel.Kernel.ask`).

Every event is recorded before it is handed on, and every new turn is saved as
soon as the kernel appends it, so a crash loses nothing already said;
:meth:`Session.resume` rebuilds the conversation from the store.

Not covered: concurrent writers to one session.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from llmos_tools import Registry, load_tools

from llmos.events import Event
from llmos.kernel import Kernel
from llmos.models import Machine, open_machine
from llmos.pager import Pager
from llmos.store import SessionStore, default_store_path


class Session:
    def __init__(
        self,
        kernel: Kernel,
        store: SessionStore | None,
        session_id: str,
        machine: Machine | None = None,
        *,
        owns_machine: bool = True,
    ):
        self.kernel, self.store, self.id, self.machine = kernel, store, session_id, machine
        self.owns_machine = owns_machine  # close() closes the machine's CPU
        self._saved = 0
        self._save_turns()

    @classmethod
    def open(
        cls,
        model: str | None = None,
        *,
        tools: Iterable[str] | None = None,
        dialect: str | None = None,
        n_ctx: int = 2048,
        store: SessionStore | str | Path | None = None,
        resume: str | None = None,
        title: str = "",
        memory: str | Path | None = None,
        machine: Machine | None = None,
        chat_template: str | None = None,
        **kernel_options: Any,
    ) -> Session:
        """Open a model (or use ``machine``) and a session; ``memory`` is the page store (default beside
        the session store)."""
        if machine is not None and (model is not None or dialect is not None):
            raise ValueError("pass either machine or model/dialect, not both")
        owns = machine is None
        machine = machine or open_machine(model, dialect=dialect, n_ctx=n_ctx, chat_template=chat_template)
        registry = load_tools().only(list(tools) if tools is not None else None)
        kernel_options.setdefault("sampling", machine.sampling)
        db = store if isinstance(store, SessionStore) else SessionStore(store or default_store_path())
        if "pager" not in kernel_options:
            home = db.path.parent if isinstance(db.path, Path) else default_store_path().parent
            memory_path = Path(memory) if memory else home / "memory.sqlite"
            kernel_options["pager"] = Pager(machine.cpu, memory_path, reserve=min(512, machine.cpu.n_ctx // 4))
        if resume:
            info = db.session(resume)
            turns = db.load_turns(info.id)
            kernel = Kernel(machine.cpu, machine.dialect, registry, session_id=info.id, turns=turns, **kernel_options)
            return cls(kernel, db, info.id, machine, owns_machine=owns)
        session_id = db.new_session(title=title, model=machine.spec, dialect=machine.dialect.name)
        kernel = Kernel(machine.cpu, machine.dialect, registry, session_id=session_id, **kernel_options)
        return cls(kernel, db, session_id, machine, owns_machine=owns)

    @property
    def tools(self) -> Registry:
        return self.kernel.tools

    def ask(self, text: str | None, **options: Any) -> Iterator[Event]:
        """The kernel's events for ``text`` (``None``: continue), each recorded before it is handed on."""
        return self._recorded(self.kernel.ask(text, **options))  # nothing to continue raises here

    def _recorded(self, events: Iterator[Event]) -> Iterator[Event]:
        for event in events:
            self._save_turns(everything=event.kind == "page_out")  # a page-out rewrites an old turn
            if self.store is not None:
                self.store.record(self.id, event)
            yield event
        self._save_turns()

    def _save_turns(self, everything: bool = False) -> None:
        if self.store is None:
            return
        for turn in self.kernel.turns[0 if everything else self._saved :]:
            self.store.save_turn(self.id, turn)
        self._saved = len(self.kernel.turns)

    def close(self) -> None:
        if self.kernel.pager is not None:
            self.kernel.pager.close()
        if self.machine is not None and self.owns_machine:
            self.machine.cpu.close()
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
