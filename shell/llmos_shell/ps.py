"""``llmos ps``: the process table of llmos sessions on a shared model, and pause/resume/kill.

The table is :class:`llmos.processes.ProcessTable` (SQLite under the llmos home), written by
every llmos process that runs sessions on a batch engine (``llmos run --jobs N`` with a local
model, :class:`llmos.processes.Processes`). A control request is applied by the owning process
at its next publish (about half a second) and obeyed by the session at its next decode step.

Not covered: sessions on one plain local CPU or on an HTTP server (they are not in the table).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

COLUMNS = ("ID", "PID", "STATE", "SLOT", "TOKENS", "CTX", "SWAPS", "SESSION", "TITLE")


def add_parser(commands: Any) -> None:
    ps = commands.add_parser("ps", help="list the sessions running on shared models; pause, resume or kill one")
    ps.add_argument("--table", metavar="FILE", help="the process table (default: $LLMOS_HOME/processes.sqlite)")
    ps.add_argument("--json", action="store_true")
    ps.add_argument("--all", action="store_true", help="also show sessions of processes that died (then pruned)")
    action = ps.add_mutually_exclusive_group()
    action.add_argument("--pause", metavar="ID", help="pause a session (its slot may be swapped out)")
    action.add_argument("--resume", metavar="ID", help="resume a paused session")
    action.add_argument("--kill", metavar="ID", help="kill a session (its turn ends with an error)")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from llmos.processes import ProcessTable

    out = out or sys.stdout
    table = ProcessTable(args.table)
    for action in ("pause", "resume", "kill"):
        ident = getattr(args, action)
        if ident:
            row = table.request(ident, action)
            print(f"{action} requested for {row['id']} ({row['title'] or row['session']})", file=out)
            return 0
    rows = table.rows(include_lost=args.all)
    if args.json:
        print(json.dumps(rows), file=out)
        return 0
    print(format_rows(rows), file=out)
    return 0


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [COLUMNS]
    for r in rows:
        tokens = f"{r['tokens']}/{r['budget']}" if r["budget"] else str(r["tokens"])
        slot = "-" if r["slot"] is None else str(r["slot"])
        session = (r["session"] or "")[:12]
        lines.append(
            (r["id"], str(r["pid"]), r["state"], slot, tokens, str(r["context"]), str(r["swaps"]), session, r["title"])
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)) + "  " + line[-1] for line in lines
    ).rstrip()
