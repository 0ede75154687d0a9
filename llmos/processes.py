"""Sessions as processes: one loaded model shared by many sessions, and the table ``llmos ps`` reads.

::

    from llmos.processes import Processes
    with Processes.open("smollm2", slots=4, n_ctx=2048) as processes:
        a = processes.session(tools=["calculator"], title="a")   # a llmos.session.Session
        b = processes.session(tools=["calculator"], title="b")
        # ask a and b from two threads: their decode steps are batched on one model

:class:`Processes` wraps a :class:`~llmos.cpu.batch.BatchEngine` (one llama.cpp model and
context, ``slots`` KV slots, swapping) and hands out machines whose CPU is a
:class:`~llmos.cpu.batch.SessionCPU`. A session it opens owns that CPU: closing the session
frees its slot and its swapped state, never the model.

The process table (:class:`ProcessTable`) is a small SQLite file, ``processes.sqlite`` under
the llmos home (``$LLMOS_HOME``), so ``llmos ps`` in another terminal sees the sessions of every
llmos process on the machine. Honest about how it works:

* Each :class:`Processes` with a table publishes its sessions' rows (state, slot, tokens,
  budget, swaps) from a daemon thread every ``interval`` seconds (0.5 by default), stamped
  with the OS process id; the rows are deleted when it closes. A row whose process id is no
  longer alive (a crash) is shown as ``lost`` and pruned by :meth:`ProcessTable.rows`.
* Control from another process (pause, resume, kill) is a request row: the owning process
  reads it at its next publish and applies it; the session obeys at its next decode step
  (so within about ``interval`` plus one token). In the same process, call
  :meth:`Processes.pause` (etc.) directly.

Not covered: sessions not on a batch engine (one plain :class:`~llmos.cpu.llama.LlamaCPU`,
HTTP backends) are not listed; process ids are checked on this machine only.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmos_memory.migrations import migrate

from llmos.cpu.batch import BatchEngine, ProcessInfo
from llmos.models import Machine, _dialect_for, local_model

ACTIONS = ("pause", "resume", "kill")
# Schema migrations (llmos_memory.migrations): append, never edit a released one.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE processes (
            id TEXT PRIMARY KEY, pid INTEGER, owner TEXT, state TEXT, slot INTEGER, title TEXT, session TEXT,
            model TEXT, tokens INTEGER, evaluated INTEGER, budget INTEGER, context INTEGER, swaps INTEGER,
            updated REAL)""",
        "CREATE TABLE requests (id TEXT PRIMARY KEY, action TEXT, made REAL)",
    ],
]


def default_table_path() -> Path:
    from llmos_tools.cache import llmos_home

    return llmos_home() / "processes.sqlite"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


class ProcessTable:
    """The SQLite process table (module docstring). One connection per thread that uses it."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_table_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            migrate(db, MIGRATIONS, self.path)
        finally:
            db.close()

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        try:
            with db:
                yield db
        finally:
            db.close()

    def publish(self, pid: int, owner: str, model: str, rows: list[ProcessInfo]) -> None:
        """Replace the rows of ``owner`` (one :class:`Processes` of process ``pid``) by ``rows``."""
        now = time.time()
        with self._connect() as db:
            db.execute("DELETE FROM processes WHERE owner = ?", (owner,))
            db.executemany(
                "INSERT OR REPLACE INTO processes VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (f"{pid}.{r.id}", pid, owner, r.state, r.slot, r.title, r.session, model, r.tokens, r.evaluated,
                     r.budget, r.context, r.swaps, now)
                    for r in rows
                ],
            )  # fmt: skip

    def rows(self, *, include_lost: bool = False) -> list[dict[str, Any]]:
        """Every session of every live process; rows of dead processes are pruned (and shown as lost if asked)."""
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            found = [dict(row) for row in db.execute("SELECT * FROM processes ORDER BY pid, updated, id")]
            lost = {row["pid"] for row in found if not pid_alive(row["pid"])}
            for pid in lost:
                db.execute("DELETE FROM processes WHERE pid = ?", (pid,))
        for row in found:
            if row["pid"] in lost:
                row["state"] = "lost"
        return [row for row in found if include_lost or row["pid"] not in lost]

    def find(self, ident: str) -> dict[str, Any]:
        """The row whose id (or session id) is ``ident`` or starts with it; :class:`KeyError` if none or several."""
        rows = self.rows()
        exact = [r for r in rows if ident in (r["id"], r["session"])]
        matches = exact or [r for r in rows if r["id"].startswith(ident) or (r["session"] or "").startswith(ident)]
        if len(matches) != 1:
            found = "no running session" if not matches else f"{len(matches)} sessions"
            raise KeyError(f"{found} matches {ident!r} (see `llmos ps`)")
        return matches[0]

    def request(self, ident: str, action: str) -> dict[str, Any]:
        """Ask the owning process to ``pause``/``resume``/``kill`` a session; returns its row."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
        row = self.find(ident)
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO requests VALUES (?,?,?)", (row["id"], action, time.time()))
        return row

    def take_requests(self, ids: list[str]) -> list[tuple[str, str]]:
        """The requests made for the rows ``ids``, as (row id, action); they are removed."""
        marks = ",".join("?" * len(ids))
        with self._connect() as db:
            found = list(db.execute(f"SELECT id, action FROM requests WHERE id IN ({marks})", ids))
            db.execute(f"DELETE FROM requests WHERE id IN ({marks})", ids)
        return [(ident, action) for ident, action in found]

    def forget(self, owner: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM processes WHERE owner = ?", (owner,))


class Processes:
    """One model shared by many sessions (module docstring)."""

    def __init__(
        self,
        engine: BatchEngine,
        spec: str,
        table: ProcessTable | None = None,
        interval: float = 0.5,
        dialect: str | None = None,  # the model's own dialect, when its files cannot say (a fine-tune)
    ):
        self.engine, self.spec, self.table, self.interval = engine, spec, table, interval
        self.dialect = dialect
        self.pid = os.getpid()
        self.owner = f"{self.pid}:{id(self):x}"  # several per process are fine: rows are per owner
        self._stop = threading.Event()
        self._publisher: threading.Thread | None = None
        if table is not None:
            self._publisher = threading.Thread(target=self._publish_loop, name="llmos-ps", daemon=True)
            self._publisher.start()

    @classmethod
    def open(
        cls,
        model: str | None = None,
        *,
        slots: int = 4,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        swap_dir: str | Path | None = None,
        quantum: float = 2.0,
        table: ProcessTable | str | Path | bool | None = True,
    ) -> Processes:
        """Load a local GGUF model (a path, a packaged or pulled name, ``None`` for the default) once.

        ``table``: ``True`` for the default process table, a path or a :class:`ProcessTable`, or
        ``False``/``None`` for none (the sessions are then not visible to ``llmos ps``).
        """
        local = local_model(model)
        engine = BatchEngine(
            local.path,
            slots=slots,
            lora=local.lora,
            n_ctx=n_ctx,
            n_threads=n_threads,
            swap_dir=swap_dir,
            quantum=quantum,
        )
        if table is True:
            table = ProcessTable()
        elif isinstance(table, str | Path):
            table = ProcessTable(table)
        return cls(engine, local.spec, table or None, dialect=local.dialect)

    def machine(self, *, dialect: str | None = None, title: str = "", budget: int = 0) -> Machine:
        """A machine for one more session: its own :class:`~llmos.cpu.batch.SessionCPU` on the shared model."""
        cpu = self.engine.session(title=title, budget=budget)
        return Machine(cpu, _dialect_for(cpu, dialect or self.dialect), self.spec)

    def session(self, *, dialect: str | None = None, title: str = "", **options: Any) -> Any:
        """A :class:`~llmos.session.Session` on its own machine (``options`` as for ``Session.open``)."""
        from llmos.session import Session

        budgets = options.get("budgets")
        machine = self.machine(dialect=dialect, title=title, budget=budgets.max_tokens if budgets else 0)
        session = Session.open(machine=machine, title=title, **options)
        session.owns_machine = True  # closing the session frees the slot (never the model)
        machine.cpu.session_id = session.id  # type: ignore[attr-defined]
        return session

    # process control, in this process
    def processes(self) -> list[ProcessInfo]:
        return self.engine.processes()

    def pause(self, process_id: str) -> None:
        self.engine.pause(process_id)

    def resume(self, process_id: str) -> None:
        self.engine.resume(process_id)

    def kill(self, process_id: str) -> None:
        self.engine.kill(process_id)

    def publish(self) -> None:
        """Write this process's rows and apply the control requests made for them (the publisher's step)."""
        if self.table is None:
            return
        rows = self.engine.processes()
        for ident, action in self.table.take_requests([f"{self.pid}.{r.id}" for r in rows]):
            with contextlib.suppress(KeyError):  # the session ended meanwhile
                getattr(self.engine, action)(ident.split(".", 1)[1])
        self.table.publish(self.pid, self.owner, self.spec, self.engine.processes())

    def _publish_loop(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(sqlite3.Error):  # a locked table: the next round tries again
                self.publish()

    def close(self) -> None:
        self._stop.set()
        if self._publisher is not None:
            self._publisher.join(timeout=5)
        if self.table is not None:
            with contextlib.suppress(sqlite3.Error):
                self.table.forget(self.owner)
        self.engine.close()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def row_dict(info: ProcessInfo) -> dict[str, Any]:
    return asdict(info)
