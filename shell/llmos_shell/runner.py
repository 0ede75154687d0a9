"""The task runner behind ``llmos run``: one task file in, one run folder out.

A run folder (``runs/<timestamp>-<slug>/`` or ``--out DIR``) holds::

    run.json          written at start: session id, store, the validated task (for --resume)
    task.yaml         a copy of the task file as given
    artifacts/        the kernel's workdir: every file a tool writes
    answer.md         the final answer, as the model wrote it
    transcript.json   the whole session from the store: turns, events, calls, results, audit
    report.md/.html   a readable report (see :mod:`llmos_shell.report`)
    summary.json      written last: status, exit code, checks; its absence means "resumable"

Contract
--------
* :func:`run_task` runs a validated :class:`~llmos_shell.task.Task` and returns a :class:`RunResult`;
  progress goes to a :class:`Display` (live status line, plain lines, or JSON lines).
* Exit codes: 0 answered and every check passed, 4 a check failed, 3 a budget ran out,
  2 bad task file (raised as :class:`~llmos_shell.task.TaskError` before anything runs), 1 error
  (model missing, backend failure). :func:`worst` combines several runs' codes.
* Resume (:func:`resume_run`): the kernel is rebuilt from the session store's turns and
  continues from the last one with ``ask(None)``, adding no turn: after the prompt or a
  tool result the model generates the next step; a call trapped but not answered before
  the interruption is dispatched (see :mod:`llmos.kernel`). A run that had answered but was
  killed before its files were written only gets them written. Budgets start afresh for
  the resumed part; ``force_call`` applies only if the model had not said anything yet.
* Several tasks (:func:`run_many`, ``--jobs N``) run in threads, each with its own session and
  store connection. Tasks on one local GGUF model share it (:mod:`llmos.processes`: one loaded
  model, ``N`` KV slots, their decode steps batched, idle sessions swapped out; ``llmos ps``
  lists them); tasks on a server each get their own client.

Several machines: :mod:`llmos_shell.fanout` (``--ray``) runs each task on a Ray worker with this
same :func:`run_task` and brings its run folder back.

Not covered here: cancelling one job of several, retrying failed runs, remote run folders.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from llmos.events import Done, Event
from llmos.policy import render_safe
from llmos_shell.report import RunRecord, write_reports
from llmos_shell.task import Task, TaskError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_BUDGET, EXIT_CHECKS = 0, 1, 2, 3, 4


@dataclass
class RunOptions:
    out: Path | None = None  # the run folder itself (one task only)
    runs_dir: Path = Path("runs")  # parent of generated run folders
    store: Path | None = None  # session database (default: $LLMOS_HOME/sessions.db)
    approver: Callable[[Any], bool] | None = None
    machine_factory: Callable[[Task], Any] | None = None  # Task -> Machine; tests plug a ScriptedCPU in here
    registry: Any = None  # a llmos_tools.Registry to use instead of the installed tools


@dataclass
class RunResult:
    folder: Path
    status: str  # answer | budget | error | checks_failed | finished (resume of a finished run)
    exit_code: int
    answer: str = ""
    session_id: str = ""
    checks: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "kind": "summary",
            "folder": str(self.folder),
            "status": self.status,
            "exit_code": self.exit_code,
            "session": self.session_id,
            "answer": self.answer,
            "checks": self.checks,
        }


# -- displays ---------------------------------------------------------------------------


class Display:
    """Receives the run's events; the default shows nothing."""

    lock = threading.Lock()  # several jobs share one terminal

    def start(self, folder: Path, session_id: str) -> None: ...

    def event(self, event: Event, counters: dict[str, float]) -> None: ...

    def finish(self, result: RunResult) -> None: ...


class JsonDisplay(Display):
    """Every event as a JSON line, then a summary line: for programs."""

    def __init__(self, out: TextIO = sys.stdout, label: str = "") -> None:
        self.out, self.label = out, label

    def _write(self, data: dict[str, Any]) -> None:
        line = json.dumps({"task": self.label, **data} if self.label else data, ensure_ascii=False, default=str)
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()

    def start(self, folder: Path, session_id: str) -> None:
        self._write({"kind": "start", "folder": str(folder), "session": session_id})

    def event(self, event: Event, counters: dict[str, float]) -> None:
        self._write(event.to_dict())

    def finish(self, result: RunResult) -> None:
        self._write(result.summary())


class PlainDisplay(Display):
    """One line per call, result, error and check: for logs and pipes."""

    def __init__(self, err: TextIO = sys.stderr, label: str = "") -> None:
        self.err, self.prefix = err, f"[{label}] " if label else ""

    def line(self, text: str) -> None:
        with self.lock:
            self.err.write(f"{self.prefix}{text}\n")
            self.err.flush()

    def start(self, folder: Path, session_id: str) -> None:
        self.line(f"run folder {folder} · session {session_id}")

    def event(self, event: Event, counters: dict[str, float]) -> None:
        text = describe(event)
        if text:
            self.line(text)

    def finish(self, result: RunResult) -> None:
        for check in result.checks:
            self.line(f"check {'pass' if check['passed'] else 'FAIL'}: {check['check']} ({check['detail']})")
        self.line(f"{result.status} (exit code {result.exit_code}) · {result.folder}")


class LiveDisplay(PlainDisplay):
    """Plain lines plus a status line redrawn in place: steps, tokens/s, the running tool."""

    def __init__(self, err: TextIO = sys.stderr, max_steps: int = 0) -> None:
        super().__init__(err)
        self.max_steps, self.steps, self.tool = max_steps, 0, ""
        self.started = time.monotonic()
        self.drawn = 0.0

    def line(self, text: str) -> None:
        with self.lock:
            self.err.write(f"\r\x1b[2K{text}\n")
            self.err.flush()

    def event(self, event: Event, counters: dict[str, float]) -> None:
        if event.kind == "call":
            self.steps += 1
            self.tool = event.name  # type: ignore[attr-defined]
        elif event.kind == "result":
            self.tool = ""
        super().event(event, counters)
        now = time.monotonic()
        if event.kind != "token" or now - self.drawn > 0.1:  # redraw at most 10 times a second for tokens
            self.drawn = now
            tokens = int(counters.get("tokens_sampled", 0))
            rate = tokens / max(now - self.started, 1e-6)
            tool = f" · running {self.tool}" if self.tool else ""
            with self.lock:
                self.err.write(
                    f"\r\x1b[2Kstep {self.steps}/{self.max_steps} · {tokens} tokens · {rate:.1f} tok/s{tool}"
                )
                self.err.flush()


def describe(event: Event) -> str:
    """One readable line for the events a person follows (tokens are not lines).

    What a model, page or tool wrote (arguments, results, reasons that quote them) is
    shown through :func:`~llmos.policy.render_safe`: no image, link, tag or terminal escape.
    """
    return render_safe(_describe(event))


def _describe(event: Event) -> str:
    data = event.to_dict()
    kind = event.kind
    if kind == "call":
        return f"call {data['name']} {json.dumps(data['arguments'], ensure_ascii=False)}"
    if kind == "result":
        text = data["text"] if len(data["text"]) < 200 else data["text"][:200] + " …"
        return f"result {data['name']}{' (error)' if data['is_error'] else ''} {data['seconds']:.2f}s: {text}"
    if kind == "policy" and data["decision"] != "allow":
        return f"policy {data['decision']} {data['name']}: {'; '.join(data['reasons'])} (approved: {data['approved']})"
    if kind == "artifact":
        return f"artifact {data['path']}"
    if kind == "error":
        return f"error {data['code']}: {data['message']}"
    return ""


# -- run folders ------------------------------------------------------------------------


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:40].rstrip("-") or "task"


def new_run_folder(runs_dir: Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = runs_dir / f"{stamp}-{slugify(name)}"
    for n in range(1, 1000):
        folder = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            folder.mkdir(parents=True)  # atomic: two jobs never share a folder
            return folder
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run folder under {runs_dir}")


# -- running ----------------------------------------------------------------------------


def run_task(task: Task, options: RunOptions, display: Display | None = None, source: Path | None = None) -> RunResult:
    """Run one task into a new run folder (or ``options.out``)."""
    display = display or Display()
    folder = options.out or new_run_folder(options.runs_dir, task.title or (source.stem if source else task.prompt))
    (folder / "artifacts").mkdir(parents=True, exist_ok=True)
    if source is not None:
        shutil.copyfile(source, folder / "task.yaml")
    try:
        session = _open_session(task, options, folder)
    except Exception as exc:
        return _failed_to_start(task, folder, exc, display)
    store_path = options.store or session.store.path
    _write_json(folder / "run.json", {"session": session.id, "store": str(store_path), "task": task.model_dump()})
    return _drive(task, session, task.prompt, folder, display)


def resume_run(folder: Path, options: RunOptions, display: Display | None = None) -> RunResult:
    """Continue a run that did not finish; a finished run just reports its result again."""
    display = display or Display()
    try:
        run = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TaskError(f"{folder}: not a run folder (cannot read run.json: {exc})") from None
    if (folder / "summary.json").is_file():
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        result = RunResult(folder, "finished", summary["exit_code"], summary.get("answer", ""), run["session"])
        display.finish(result)
        return result
    task = Task.model_validate(run["task"])
    options.store = options.store or Path(run["store"])
    session = _open_session(task, options, folder, resume=run["session"])
    return _drive(task, session, None, folder, display)


def _open_session(task: Task, options: RunOptions, folder: Path, resume: str | None = None) -> Any:
    """A :class:`~llmos.session.Session` whose kernel writes into the run folder's artifacts/."""
    from llmos_tools import load_tools

    from llmos.kernel import Kernel
    from llmos.models import open_machine
    from llmos.policy import Policy
    from llmos.policy.plan import PLAN_TOOL, plan_tool
    from llmos.session import Session
    from llmos.store import SessionStore, default_store_path

    policy = Policy.from_config(task.policy_config())
    registry = (options.registry or load_tools()).only(task.tool_names())
    if policy.plan == "required" and PLAN_TOOL not in registry:
        registry.add(plan_tool())  # the policy refuses calls with effects until the model plans
    machine = options.machine_factory(task) if options.machine_factory else None
    if machine is None:
        machine = open_machine(task.model, dialect=task.dialect, n_ctx=task.n_ctx)
    store = SessionStore(options.store or default_store_path())
    kernel_options: dict[str, Any] = {
        "system": task.system,
        "budgets": task.kernel_budgets(),
        "sampling": task.cpu_sampling(machine.sampling),
        "policy": policy,
        "approver": options.approver,
        "workdir": folder / "artifacts",
        "settings": task.kernel_settings(),
    }
    if resume:
        session_id = store.session(resume).id
        turns = store.load_turns(session_id)
    else:
        title = task.title or task.prompt[:80]
        meta = {"run": str(folder)}
        session_id = store.new_session(title=title, model=machine.spec, dialect=machine.dialect.name, meta=meta)
        turns = None
    if hasattr(machine.cpu, "session_id"):  # a process of a shared model: `llmos ps` shows its session
        machine.cpu.session_id = session_id
    kernel = Kernel(machine.cpu, machine.dialect, registry, session_id=session_id, turns=turns, **kernel_options)
    return Session(kernel, store, session_id, machine)


def _drive(task: Task, session: Any, prompt: str | None, folder: Path, display: Display) -> RunResult:
    """Ask ``prompt`` (``None``: continue the session) and write the run folder's files."""
    started = time.monotonic()
    done: Done | None = None
    display.start(folder, session.id)
    with session:
        kernel = session.kernel
        counters = kernel.cpu.counters
        if prompt is None and not kernel.can_continue():  # it had answered; only its files are missing
            events: Any = [_recorded_done(session)]
        else:
            force = task.force_call and (prompt is not None or kernel.turns[-1].role == "user")
            events = session.ask(prompt, force_call=force)
        for event in events:
            display.event(event, counters.as_dict())
            if isinstance(event, Done):
                done = event
        export = session.store.export(session.id)
    _write_json(folder / "transcript.json", export)
    answer = done.answer if done else ""
    (folder / "answer.md").write_text(answer + "\n", encoding="utf-8")
    checks = run_checks(task, answer, folder)
    status, code = outcome(done, checks)
    events = [{"kind": e["kind"], **e["data"]} for e in export["events"]]
    record = RunRecord(
        title=task.title or task.prompt[:80],
        prompt=task.prompt,
        model=export["session"]["model"],
        session_id=session.id,
        status=status,
        exit_code=code,
        answer=answer,
        folder=folder,
        seconds=time.monotonic() - started,
        steps=sum(e["kind"] == "call" for e in events),
        counters=dict(done.counters) if done else {},
        checks=checks,
        events=events,
    )
    write_reports(record)
    result = RunResult(folder, status, code, answer, session.id, checks)
    _write_json(folder / "summary.json", result.summary())
    display.finish(result)
    return result


def _recorded_done(session: Any) -> Done:
    """The last Done the store holds, or one made from the last chunk if the kill came first."""
    from llmos.cpu.base import Piece
    from llmos.dialects.base import Text

    recorded = session.store.events(session.id, kinds=["done"])
    if recorded:
        data = recorded[-1]["data"]
        return Done(data["answer"], data["reason"], data["steps"], data["counters"])
    parser = session.kernel.dialect.parser(controls=False)
    shown = [*parser.feed(Piece(None, session.kernel.turns[-1].text)), *parser.finish()]
    answer = "".join(e.text for e in shown if isinstance(e, Text)).strip()
    return Done(answer, "answer", 0, session.kernel.cpu.counters.as_dict())


def _failed_to_start(task: Task, folder: Path, exc: Exception, display: Display) -> RunResult:
    """A model that will not load is an error (exit 1), reported in the run folder like any other."""
    from llmos.cpu.base import CPUError
    from llmos.store import StoreError

    if isinstance(exc, KeyError):  # an unknown tool name: the task file is wrong
        raise TaskError(str(exc).strip("\"'")) from None
    if not isinstance(exc, CPUError | StoreError | OSError):
        raise exc
    return record_failure(task, folder, f"cannot start: {exc}", display)


def record_failure(
    task: Task, folder: Path, message: str, display: Display, code: int = EXIT_ERROR, kind: str = "backend"
) -> RunResult:
    """A run that produced no session (it could not start, or its worker was lost): its report and summary."""
    title = task.title or task.prompt[:80]
    # the reason stands in the answer's place, as in the RunResult the command line prints
    record = RunRecord(title, task.prompt, task.model or "default", "", "error", code, message, folder)
    record.events = [{"kind": "error", "code": kind, "message": message}]
    write_reports(record)
    result = RunResult(folder, "error", code, message)
    _write_json(folder / "summary.json", result.summary())
    display.finish(result)
    return result


def run_checks(task: Task, answer: str, folder: Path) -> list[dict[str, Any]]:
    """Every check and expected output, each with passed and a detail line."""
    results = []
    expected = [f"file_exists: artifacts/{name}" for name in task.outputs]
    for check in task.checks:
        results.append(_check(check.describe(), answer, folder))
    for description in expected:
        results.append(_check(description, answer, folder))
    return results


def _check(description: str, answer: str, folder: Path) -> dict[str, Any]:
    kind, _, value = description.partition(": ")
    if kind == "answer_matches":
        passed = re.search(value, answer) is not None
        detail = "matched" if passed else "no match in the answer"
    elif kind == "answer_contains":
        passed = value in answer
        detail = "found" if passed else "not in the answer"
    else:
        path = folder / value
        passed = path.is_file()
        detail = f"{path.stat().st_size} bytes" if passed else "missing"
    return {"check": description, "passed": passed, "detail": detail}


def outcome(done: Done | None, checks: list[dict[str, Any]]) -> tuple[str, int]:
    if done is None or done.reason in ("error", "cancelled"):
        return "error", EXIT_ERROR
    if done.reason == "budget":
        return "budget", EXIT_BUDGET
    if not all(c["passed"] for c in checks):
        return "checks_failed", EXIT_CHECKS
    return "answer", EXIT_OK


SEVERITY = [EXIT_USAGE, EXIT_ERROR, EXIT_BUDGET, EXIT_CHECKS, EXIT_OK]


def worst(codes: list[int]) -> int:
    """The exit code of several runs: the most serious one (bad task > error > budget > checks > ok)."""
    return min(codes, key=SEVERITY.index, default=EXIT_OK)


def run_many(
    tasks: list[tuple[Path, Task]], options: RunOptions, jobs: int, make_display: Callable[[str], Display]
) -> list[RunResult]:
    """Run several validated tasks, ``jobs`` at a time, each into its own run folder.

    Tasks on the same local GGUF model share one loaded copy (:class:`llmos.processes.Processes`:
    ``jobs`` KV slots, batched decoding, listed by ``llmos ps``) unless ``options.machine_factory``
    chooses the machines.
    """
    shared: dict[str, Any] = {}
    factory = options.machine_factory or _shared_machines(tasks, min(jobs, len(tasks)), shared)

    def one(item: tuple[Path, Task]) -> RunResult:
        source, task = item
        job_options = RunOptions(None, options.runs_dir, options.store, options.approver, factory, options.registry)
        return run_task(task, job_options, make_display(source.name), source)

    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            return list(pool.map(one, tasks))
    finally:
        for processes in shared.values():
            processes.close()


def _shared_machines(tasks: list[tuple[Path, Task]], slots: int, shared: dict[str, Any]) -> Callable[[Task], Any]:
    """A machine factory: a task on a local model gets a session of that model's shared engine."""
    lock = threading.Lock()
    windows: dict[str, int] = {}
    for _, task in tasks:
        spec = _local_spec(task.model)
        if spec is not None:
            windows[spec] = max(windows.get(spec, 0), task.n_ctx)

    def factory(task: Task) -> Any:
        from llmos.processes import Processes

        spec = _local_spec(task.model)
        if spec is None or slots <= 1:
            return None  # a server, or nothing to share: opened the usual way
        with lock:
            if spec not in shared:
                shared[spec] = Processes.open(spec, slots=slots, n_ctx=windows[spec])
        title = task.title or task.prompt[:80]
        return shared[spec].machine(dialect=task.dialect, title=title, budget=task.budgets.tokens)

    return factory


def _local_spec(model: str | None) -> str | None:
    """The model file a task's model names, or ``None`` (a server, or no such model: the task reports it)."""
    from llmos.cpu.base import CPUError
    from llmos.models import FINE_TUNES, resolve_spec

    try:
        spec = resolve_spec(model)
        if spec.startswith(("http://", "https://")):
            return None
        return spec if spec in FINE_TUNES else str(Path(spec).expanduser())
    except CPUError:
        return None


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
