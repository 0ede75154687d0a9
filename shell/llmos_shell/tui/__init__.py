"""The terminal assistant (``llmos`` / ``llmos tui``): a textual chat on the kernel's event stream.

:func:`run_tui` builds the session factory from command-line options and runs
:class:`~llmos_shell.tui.app.ChatApp`. Needs the ``tui`` extra (textual).

A local model is loaded once for every session of the terminal (:class:`llmos.processes.Processes`,
on first use): a new or reopened session takes a KV slot on it instead of loading the model
again, and shows in ``llmos ps`` while it is open. A server URL opens one client per session.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def run_tui(args: argparse.Namespace) -> int:
    from llmos.processes import Processes
    from llmos.session import Session
    from llmos.store import default_store_path
    from llmos_shell.tui.app import ChatApp

    store = Path(args.store) if args.store else default_store_path()
    tools = [name.strip() for name in args.tools.split(",") if name.strip()] if args.tools else None
    model = args.model  # short names and hf: ids resolve in open_machine

    shared: list[Processes] = []  # the local model, loaded on the first session

    def open_session(resume: str | None, approver: Any) -> Session:
        if _is_server(model) or args.chat_template:
            return Session.open(
                model,
                tools=tools,
                dialect=args.dialect,
                n_ctx=args.n_ctx,
                store=store,
                resume=resume,
                approver=approver,
                chat_template=args.chat_template,
            )
        if not shared:
            shared.append(Processes.open(model, slots=2, n_ctx=args.n_ctx))
        options = {"tools": tools, "store": store, "resume": resume, "approver": approver}
        return shared[0].session(dialect=args.dialect, title="tui", **options)

    try:
        ChatApp(open_session, store, resume=getattr(args, "resume", None)).run()
    finally:
        for processes in shared:
            processes.close()
    return 0


def _is_server(model: str | None) -> bool:
    from llmos.models import resolve_spec

    return resolve_spec(model).startswith(("http://", "https://"))
