"""The ``llmos`` command line: chat, run a task file, read logs, list tools.

Everything heavy is imported inside the command that needs it, so ``llmos --help``
answers in a fraction of a second. The CLI is a consumer of the kernel's event
stream like any other shell: it prints tokens as they come and shows calls and
results on their own lines (on stderr, so stdout carries only the answer).

Exit codes: 0 answered, 1 error (backend, bad model), 2 bad usage or task file,
3 a budget ran out.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from llmos import __version__

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_BUDGET = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmos", description="A local-first LLM operating system.")
    parser.add_argument("--version", action="version", version=f"llmos {__version__}")
    commands = parser.add_subparsers(dest="command")

    def model_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--model", help="a GGUF path, an http(s):// OpenAI-compatible server, or 'default'")
        sub.add_argument("--dialect", choices=["llmos", "hermes", "generic"], help="default: detected")
        sub.add_argument("--tools", help="comma-separated tool names (default: all installed)")
        sub.add_argument("--n-ctx", type=int, default=2048)
        sub.add_argument("--store", help="session database (default: $LLMOS_HOME/sessions.db)")

    chat = commands.add_parser("chat", help="chat in the terminal, streaming tokens and showing tool calls")
    model_options(chat)
    chat.add_argument("--resume", metavar="SESSION", help="continue a stored session")
    chat.add_argument("--force-call", action="store_true", help="force each first step to be a tool call")

    run = commands.add_parser("run", help="run a task file and print the answer")
    run.add_argument("task", help="a task.yaml file")
    model_options(run)
    run.add_argument("--json", action="store_true", help="print the events as JSON lines")

    logs = commands.add_parser("logs", help="list stored sessions, or show one")
    logs.add_argument("session", nargs="?", help="a session id (or a unique prefix)")
    logs.add_argument("--store", help="session database")
    logs.add_argument("--json", action="store_true")
    logs.add_argument("-n", "--limit", type=int, default=20)

    commands.add_parser("tools", help="list the installed tools and plugin problems")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"chat": _chat, "run": _run, "logs": _logs, "tools": _tools, None: _chat_default}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # known failures get a line, not a traceback
        from llmos.cpu.base import CPUError
        from llmos.task import TaskError

        if isinstance(exc, TaskError | KeyError):
            print(f"llmos: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(exc, CPUError):
            print(f"llmos: {exc}", file=sys.stderr)
            return EXIT_ERROR
        raise


def _chat_default(args: argparse.Namespace) -> int:
    args = _parser().parse_args(["chat"])
    return _chat(args)


def _tool_names(value: str | None) -> list[str] | None:
    return [name.strip() for name in value.split(",") if name.strip()] if value else None


def _show(event: Any, out=sys.stdout, err=sys.stderr) -> None:
    """Print one event the way a person wants to read it."""
    kind = event.kind
    if kind == "token":
        out.write(event.text)
        out.flush()
    elif kind == "call":
        err.write(f"\n[call {event.name} {json.dumps(event.arguments, ensure_ascii=False)}]\n")
    elif kind == "result":
        text = event.text if len(event.text) < 400 else event.text[:400] + " …"
        err.write(f"[result{' error' if event.is_error else ''} {event.name}: {text}]\n")
    elif kind == "approval_request":
        err.write(f"[approval needed for {event.name}: {event.reason}]\n")
    elif kind == "artifact":
        err.write(f"[artifact {event.path}]\n")
    elif kind in ("page_in", "page_out"):
        err.write(f"[{kind} {event.page} ({event.tokens} tokens)]\n")
    elif kind == "error":
        err.write(f"\n[{event.code}] {event.message}\n")


def _approve_on_terminal(request: Any) -> bool:
    if not sys.stdin.isatty():
        return False  # no person to ask: deny
    answer = input(f"Allow {request.name}({json.dumps(request.arguments)})? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _chat(args: argparse.Namespace) -> int:
    from llmos.session import Session

    session = Session.open(
        args.model, tools=_tool_names(args.tools), dialect=args.dialect, n_ctx=args.n_ctx, store=args.store,
        resume=args.resume, approver=_approve_on_terminal,
    )
    print(f"llmos {__version__} · {session.machine.spec if session.machine else ''} · session {session.id} · "
          f"tools: {', '.join(session.tools.names()) or 'none'} · Ctrl-D to quit", file=sys.stderr)
    with session:
        while True:
            try:
                text = input("\n> ")
            except EOFError:
                return EXIT_OK
            if not text.strip():
                continue
            for event in session.ask(text, force_call=args.force_call):
                _show(event)
            print()


def _run(args: argparse.Namespace) -> int:
    import dataclasses

    from llmos.session import Session
    from llmos.task import load_task

    task = load_task(args.task)
    session = Session.open(
        args.model or task.model, tools=_tool_names(args.tools) or task.tools, dialect=args.dialect or task.dialect,
        n_ctx=args.n_ctx if args.n_ctx != 2048 else task.n_ctx, store=args.store, title=task.prompt[:80],
        system=task.system, budgets=task.budgets, sampling=task.sampling,
    )
    done = None
    with session:
        for event in session.ask(task.prompt, force_call=task.force_call):
            if args.json:
                print(json.dumps(dataclasses.asdict(event) | {"kind": event.kind}, default=str), flush=True)
            elif event.kind != "token":
                _show(event, out=sys.stderr)
            if event.kind == "done":
                done = event
    if done is None:
        return EXIT_ERROR
    if not args.json:
        print(done.answer)
    return {"answer": EXIT_OK, "budget": EXIT_BUDGET}.get(done.reason, EXIT_ERROR)


def _logs(args: argparse.Namespace) -> int:
    from llmos.store import SessionStore, default_store_path

    with SessionStore(args.store or default_store_path()) as store:
        if args.session:
            data = store.export(args.session)
            if args.json:
                print(json.dumps(data, indent=2, default=str))
                return EXIT_OK
            for turn in data.get("turns", []):
                print(f"--- {turn['role']}\n{turn['text']}")
            return EXIT_OK
        sessions = store.sessions(limit=args.limit)
        if args.json:
            print(json.dumps([dataclasses_asdict(s) for s in sessions], default=str))
            return EXIT_OK
        for info in sessions:
            print(f"{info.id}  {info.created}  {info.model}  {info.title}")
    return EXIT_OK


def dataclasses_asdict(value: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(value)


def _tools(args: argparse.Namespace) -> int:
    from llmos_tools import load_tools

    registry = load_tools()
    for name in registry.names():
        tool = registry[name]
        effects = ", ".join(sorted(str(e) for e in tool.effects)) or "read-only"
        print(f"{name:<14} [{effects}] ({tool.plugin}) {tool.description}")
    for problem in registry.problems:
        print(f"problem: {problem}", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
