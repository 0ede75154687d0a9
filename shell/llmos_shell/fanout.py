"""``llmos run --ray``: several task files fanned out over the machines of a Ray cluster.

Ray (https://docs.ray.io) schedules, retries and moves the data; llmos adds nothing of a
scheduler of its own. Each task file becomes one Ray task that calls the same
:func:`~llmos_shell.runner.run_task` as a local run, on a worker, into a scratch folder of that
worker; the finished run folder comes back as tar bytes in the task's return value and is
unpacked into the run folder the driver made for it under ``--runs-dir``. No filesystem is
shared between the driver and the workers.

Contract
--------
* :func:`run_on_ray` returns one :class:`~llmos_shell.runner.RunResult` per task, in the order
  given, each with its run folder on this machine. Every task is accounted for: a task whose
  worker died on every attempt, or that raised on the worker, gets a run folder with a report
  and ``summary.json`` saying why (exit code 1; 2 for a :class:`~llmos_shell.task.TaskError`,
  such as a tool not installed on the worker).
* A worker that dies (killed, out of memory, its node lost) is retried by Ray up to
  ``retries`` times (``max_retries``). An exception raised by the run is not retried
  (``retry_exceptions=False``): the runner already turns backend failures into runs with exit
  code 1, so what escapes it (a bad task, a bug) would fail the same way again.
* Each run's session store is its own ``sessions.db`` inside its run folder (the worker's
  ``$LLMOS_HOME`` is not on this machine): ``llmos logs --store RUN/sessions.db`` reads it, and
  ``run.json`` names it; ``run.json`` also says which host ran the task and where.
* Each worker opens its own model, tools, sandbox and browser for each task: the sharing of
  one loaded model between jobs (``--jobs``, :mod:`llmos.processes`) is per process and does
  not apply here. A task's model must be reachable from every worker: the same file path, a
  packaged or pulled model present there, or a server URL.
* ``address``: ``"local"`` starts a Ray head on this machine for the run (and stops it after);
  ``"auto"`` joins the cluster ``ray start`` made here or ``$RAY_ADDRESS`` names; anything else
  is a cluster address (``host:6379`` or ``ray://host:10001``). If this process is already
  connected to Ray (``ray.init`` was called), that connection is used and left open.

Not covered: streaming events while a task runs (the display gets each run's summary when it
comes back); asking a person to approve a call (workers have no terminal: ``ask`` is denied);
resuming a run on a worker (``--resume`` runs here); putting the sessions into this machine's
store; the scratch folder of a worker that was killed stays in that worker's temp directory.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos_errors import LlmosError

from llmos_shell import runner
from llmos_shell.runner import Display, RunOptions, RunResult
from llmos_shell.task import Task, TaskError

RETRIES = 2  # attempts after the first for a task whose worker died
STORE_NAME = "sessions.db"  # the run's session store, inside its run folder


class FanoutError(LlmosError, RuntimeError):
    """Ray is not installed, or the cluster cannot be reached."""


@dataclass
class Job:
    """One task file on its way: where its run folder is on this machine."""

    source: Path
    task: Task
    folder: Path


def run_on_ray(
    tasks: list[tuple[Path, Task]],
    options: RunOptions,
    address: str,
    make_display: Callable[[str], Display],
    retries: int = RETRIES,
    init_options: dict[str, Any] | None = None,
) -> list[RunResult]:
    """Run validated tasks on the Ray cluster at ``address``, each into a run folder here.

    ``options.machine_factory`` and ``options.registry`` travel to the workers (pickled by Ray);
    ``options.store`` and ``options.approver`` do not apply (see the module docstring).
    """
    with ray_connection(address, **(init_options or {})):
        import ray

        # the folders here are made once the cluster answers, before any task leaves: names never clash
        jobs = [Job(source, task, _driver_folder(source, task, options, len(tasks))) for source, task in tasks]
        remote = ray.remote(_run_on_worker).options(max_retries=retries, retry_exceptions=False)
        pending = {
            remote.remote(job.task, job.folder.name, _read(job.source), options.machine_factory, options.registry): n
            for n, job in enumerate(jobs)
        }
        results: list[RunResult | None] = [None] * len(jobs)
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    n = pending.pop(ref)
                    results[n] = _collect(ref, jobs[n], retries, make_display(jobs[n].source.name))
        finally:
            for ref in pending:  # interrupted: stop what is still running
                ray.cancel(ref, force=True)
    return [result for result in results if result is not None]


@contextmanager
def ray_connection(address: str, **init_options: Any) -> Iterator[None]:
    """Connected to Ray for the block; a connection this opened is closed after it."""
    try:
        import ray
    except ImportError as exc:
        raise FanoutError(f"--ray needs Ray: pip install 'llmos[ray]' ({exc})") from None
    if ray.is_initialized():
        yield
        return
    if address == "local":
        init_options.setdefault("include_dashboard", False)
    try:
        ray.init(address=address, **init_options)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise FanoutError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None
    try:
        yield
    finally:
        ray.shutdown()


# -- on the worker ----------------------------------------------------------------------


def _run_on_worker(task: Task, name: str, task_file: bytes | None, machine_factory: Any, registry: Any) -> dict:
    """Run one task in a scratch folder of this worker; return its summary and the folder as tar bytes."""
    scratch = Path(tempfile.mkdtemp(prefix="llmos-ray-"))
    try:
        folder = scratch / name
        source = None
        if task_file is not None:
            source = scratch / "task.yaml"
            source.write_bytes(task_file)
        options = RunOptions(out=folder, store=folder / STORE_NAME, machine_factory=machine_factory, registry=registry)
        result = runner.run_task(task, options, None, source)
        return {"summary": result.summary(), "tar": _pack(folder), "host": socket.gethostname(), "folder": str(folder)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _pack(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=".")
    return buffer.getvalue()


# -- back on the driver -----------------------------------------------------------------


def _driver_folder(source: Path, task: Task, options: RunOptions, count: int) -> Path:
    """The run folder on this machine: ``--out`` for a single task, else a new one under ``--runs-dir``."""
    if options.out is not None and count == 1:
        options.out.mkdir(parents=True, exist_ok=True)
        return options.out
    return runner.new_run_folder(options.runs_dir, task.title or source.stem)


def _read(source: Path) -> bytes | None:
    return source.read_bytes() if source.is_file() else None


def _collect(ref: Any, job: Job, retries: int, display: Display) -> RunResult:
    """The run folder of a finished task unpacked here, or a failed run saying why the task was lost."""
    import ray

    try:
        shipped = ray.get(ref)
    except ray.exceptions.RayError as exc:
        return _lost(job, exc, retries, display)
    with tarfile.open(fileobj=io.BytesIO(shipped["tar"]), mode="r:gz") as tar:
        tar.extractall(job.folder, filter="data")  # "data": no absolute paths, links or devices
    _relocate(job.folder, shipped["host"], shipped["folder"])
    summary = shipped["summary"]
    result = RunResult(
        job.folder, summary["status"], summary["exit_code"], summary["answer"], summary["session"], summary["checks"]
    )
    display.finish(result)
    return result


def _relocate(folder: Path, host: str, worker_folder: str) -> None:
    """Point run.json and summary.json at the folder here; the worker's paths are gone."""
    for name, changes in (
        ("run.json", {"store": str(folder / STORE_NAME), "worker": {"host": host, "folder": worker_folder}}),
        ("summary.json", {"folder": str(folder)}),
    ):
        path = folder / name
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            path.write_text(json.dumps({**data, **changes}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _lost(job: Job, error: Exception, retries: int, display: Display) -> RunResult:
    """A task that came back with no run folder: recorded as a failed run, never dropped."""
    import ray

    cause = getattr(error, "cause", None)  # a RayTaskError carries the exception the run raised
    if isinstance(error, ray.exceptions.RayTaskError) and cause is not None:
        code = runner.EXIT_USAGE if isinstance(cause, TaskError) else runner.EXIT_ERROR
        message = f"the run raised on its worker: {type(cause).__name__}: {cause}"
        kind = "worker_exception"
    else:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        code, kind = runner.EXIT_ERROR, "worker_lost"
        message = f"its worker was lost on every attempt ({1 + retries}): {type(error).__name__}: {first_line}"
    if job.source.is_file():
        shutil.copyfile(job.source, job.folder / "task.yaml")
    return runner.record_failure(job.task, job.folder, message, display, code, kind)
