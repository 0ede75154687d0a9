"""The terminal assistant (``llmos`` / ``llmos tui``): a textual chat on the kernel's event stream.

:func:`run_tui` builds the session factory from command-line options and runs
:class:`~llmos_shell.tui.app.ChatApp`. Needs the ``tui`` extra (textual).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def run_tui(args: argparse.Namespace) -> int:
    from llmos.session import Session
    from llmos.store import default_store_path
    from llmos_shell.tui.app import ChatApp

    store = Path(args.store) if args.store else default_store_path()
    tools = [name.strip() for name in args.tools.split(",") if name.strip()] if args.tools else None
    model = args.model  # short names and hf: ids resolve in open_machine

    def open_session(resume: str | None, approver: Any) -> Session:
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

    ChatApp(open_session, store, resume=getattr(args, "resume", None)).run()
    return 0
