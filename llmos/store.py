"""The session store: one SQLite file (WAL) that keeps every session as it happens.

Contract
--------
* A session has a short random id, a title, the model and dialect it ran with, free
  ``meta`` and a ``status`` ("new", then the ``reason`` of its last :class:`Done`).
* :meth:`SessionStore.save_turn` keeps the conversation: one row per
  :class:`~llmos.dialects.base.Turn`, keyed by ``(session, turn.id)``, holding every field
  of the dataclass (exact tokens and meta included), so :meth:`load_turns` rebuilds the
  turns and a session can be resumed.
* :meth:`SessionStore.record` keeps the kernel's event stream: every event goes to
  ``events`` (numbered per session); calls, results and policy decisions also go to their
  own tables (``calls``, ``results``, ``audit``) so they can be queried directly.
  :class:`Token` events are skipped unless ``keep_tokens=True``: there is one per
  generated token, and the text they make up is already kept as the assistant turn.
* Every write is one transaction, committed before the method returns, so a crash (even
  ``kill -9``) loses nothing a call has returned from. ``synchronous=NORMAL``: in WAL mode
  that survives any process crash; a power loss may drop the last few commits but never
  corrupts the file. FULL would add an fsync to every event for that last case only.
* The schema is created and upgraded by :data:`MIGRATIONS`, numbered by
  ``PRAGMA user_version``, each applied once in its own transaction.
* Reads accept a unique prefix of a session id; an unknown or ambiguous id raises
  :class:`KeyError`. Writes take the exact id. Any SQLite failure (not a database, a
  database from a newer llmos, disk full, store closed) raises :class:`StoreError`.
* Values that are not JSON (in meta, arguments, event data) are stored as their ``str()``
  so that logging never crashes the kernel.

A store is used from the thread that opened it (sqlite3's default ``check_same_thread``);
open one store per thread or process: WAL lets them share the file, and writers wait up
to ``BUSY_TIMEOUT_S`` for each other.

Not covered: deleting or renaming sessions, full-text search, pages and KV state (the
memory package keeps those), artifact files (only their paths are kept).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmos_memory.migrations import StoreError, migrate, use_wal  # one error and one migration runner for every store

from llmos.dialects.base import Turn
from llmos.events import CallEvent, Done, Event, PolicyDecision, ResultEvent, Token

BUSY_TIMEOUT_S = 5.0

# Each migration (a list of statements) runs once, in a transaction (llmos_memory.migrations),
# and sets PRAGMA user_version to its position (1-based). Never edit a released one: append.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            created TEXT NOT NULL,
            updated TEXT NOT NULL,
            title TEXT NOT NULL DEFAULT '',
            model TEXT NOT NULL DEFAULT '',
            dialect TEXT NOT NULL DEFAULT '',
            meta TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL DEFAULT 'new'
        )""",
        "CREATE INDEX sessions_created ON sessions (created)",
        """CREATE TABLE turns (
            session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            role TEXT NOT NULL,
            text TEXT NOT NULL,
            tokens TEXT,
            trusted INTEGER NOT NULL,
            source TEXT NOT NULL,
            ended INTEGER NOT NULL,
            meta TEXT NOT NULL,
            PRIMARY KEY (session_id, seq)
        )""",
        """CREATE TABLE events (
            session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            data TEXT NOT NULL,
            created TEXT NOT NULL,
            PRIMARY KEY (session_id, seq)
        )""",
        # call ids are the kernel's; they are not assumed unique, so rows get their own key
        """CREATE TABLE calls (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            call_id TEXT NOT NULL,
            name TEXT NOT NULL,
            arguments TEXT NOT NULL,
            raw TEXT NOT NULL,
            decision TEXT,
            created TEXT NOT NULL
        )""",
        "CREATE INDEX calls_session ON calls (session_id, call_id)",
        """CREATE TABLE results (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            call_id TEXT NOT NULL,
            name TEXT NOT NULL,
            text TEXT NOT NULL,
            is_error INTEGER NOT NULL,
            trust TEXT NOT NULL,
            source TEXT NOT NULL,
            seconds REAL NOT NULL,
            artifacts TEXT NOT NULL,
            created TEXT NOT NULL
        )""",
        "CREATE INDEX results_session ON results (session_id, call_id)",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            call_id TEXT NOT NULL,
            name TEXT NOT NULL,
            decision TEXT NOT NULL,
            reasons TEXT NOT NULL,
            approved INTEGER,
            created TEXT NOT NULL
        )""",
        "CREATE INDEX audit_session ON audit (session_id)",
    ],
]

SESSION_SELECT = """
    SELECT s.*, (SELECT count(*) FROM turns t WHERE t.session_id = s.id) AS turns FROM sessions s
"""


@dataclass(frozen=True)
class SessionInfo:
    id: str
    created: str  # ISO 8601, UTC
    updated: str
    title: str
    model: str
    dialect: str
    meta: dict[str, Any]
    status: str  # "new", or the reason of the last Done: answer | budget | error | cancelled
    turns: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_store_path() -> Path:
    """``$LLMOS_HOME/sessions.db`` (:func:`llmos_tools.cache.llmos_home`, the one home folder)."""
    from llmos_tools.cache import llmos_home

    return llmos_home() / "sessions.db"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def new_session_id() -> str:
    return secrets.token_hex(6)  # 12 hex digits: short to type, a prefix is usually enough


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


class SessionStore:
    """Sessions, turns, calls, results, events and audit records in one SQLite file."""

    def __init__(self, path: str | Path, *, keep_tokens: bool = False) -> None:
        self.path = path if str(path) == ":memory:" else Path(path)
        self.keep_tokens = keep_tokens
        self._conn = self._open()

    # -- opening ----------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            if isinstance(self.path, Path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: no implicit transactions; each write says BEGIN/COMMIT.
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open session store {self.path}: {exc}") from exc
        try:
            self._prepare(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open session store {self.path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._check_is_ours(conn)  # before any pragma that would change a stranger's file
        use_wal(conn, BUSY_TIMEOUT_S)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn, MIGRATIONS, self.path)

    def _check_is_ours(self, conn: sqlite3.Connection) -> None:
        # One statement, so both numbers come from the same snapshot even while another
        # process is creating the schema.
        version, tables = conn.execute(
            "SELECT (SELECT user_version FROM pragma_user_version), (SELECT count(*) FROM sqlite_master)"
        ).fetchone()
        if version == 0 and tables:
            raise StoreError(f"{self.path} is an SQLite database but not an llmos session store")
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this llmos knows ({len(MIGRATIONS)}): "
                "upgrade llmos"
            )

    # -- plumbing -----------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction, committed on leaving; IMMEDIATE takes the write lock up front."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to session store {self.path}: {exc}") from exc

    def _select(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read session store {self.path}: {exc}") from exc

    def _require(self, conn: sqlite3.Connection, session_id: str) -> None:
        if conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone() is None:
            raise KeyError(f"no session with id {session_id!r}")

    def _touch(self, conn: sqlite3.Connection, session_id: str, stamp: str) -> None:
        conn.execute("UPDATE sessions SET updated = ? WHERE id = ?", (stamp, session_id))

    # -- writing ------------------------------------------------------------------------

    def new_session(
        self, title: str = "", model: str = "", dialect: str = "", meta: dict[str, Any] | None = None
    ) -> str:
        """Create a session and return its id."""
        session_id, stamp = new_session_id(), now()
        with self._write() as conn:
            insert(
                conn,
                "sessions",
                id=session_id,
                created=stamp,
                updated=stamp,
                title=title,
                model=model,
                dialect=dialect,
                meta=to_json(meta or {}),
            )
        return session_id

    def record(self, session_id: str, event: Event) -> int | None:
        """Keep one event; return its number in the session (None for a skipped token)."""
        if isinstance(event, Token) and not self.keep_tokens:
            return None
        data = event.to_dict()
        data.pop("kind", None)
        stamp = now()
        with self._write() as conn:
            self._require(conn, session_id)
            (seq,) = conn.execute(
                "SELECT coalesce(max(seq), 0) + 1 FROM events WHERE session_id = ?", (session_id,)
            ).fetchone()
            insert(conn, "events", session_id=session_id, seq=seq, kind=event.kind, data=to_json(data), created=stamp)
            self._record_details(conn, session_id, event, stamp)
            self._touch(conn, session_id, stamp)
        return int(seq)

    def _record_details(self, conn: sqlite3.Connection, session_id: str, event: Event, stamp: str) -> None:
        """The tables that make calls, results, decisions and status easy to query."""
        if isinstance(event, CallEvent):
            insert(conn, "calls", **event_columns(session_id, event, stamp))
        elif isinstance(event, ResultEvent):
            insert(conn, "results", **event_columns(session_id, event, stamp))
        elif isinstance(event, PolicyDecision):
            insert(conn, "audit", **event_columns(session_id, event, stamp))
            # The call's verdict: a person's answer settles an "ask".
            verdict = event.decision if event.approved is None else ("allow" if event.approved else "deny")
            conn.execute(
                "UPDATE calls SET decision = ? WHERE id = "
                "(SELECT max(id) FROM calls WHERE session_id = ? AND call_id = ?)",
                (verdict, session_id, event.id),
            )
        elif isinstance(event, Done):
            conn.execute("UPDATE sessions SET status = ? WHERE id = ?", (event.reason, session_id))

    def save_turn(self, session_id: str, turn: Turn) -> None:
        """Insert the turn, or replace the one with the same ``turn.id``."""
        tokens = None if turn.tokens is None else to_json(list(turn.tokens))
        stamp = now()
        with self._write() as conn:
            self._require(conn, session_id)
            # REPLACE: an assistant chunk is saved again as it grows, under the same id.
            insert(
                conn,
                "turns",
                verb="INSERT OR REPLACE",
                session_id=session_id,
                seq=turn.id,
                role=turn.role,
                text=turn.text,
                tokens=tokens,
                trusted=turn.trusted,
                source=turn.source,
                ended=turn.ended,
                meta=to_json(turn.meta),
            )
            self._touch(conn, session_id, stamp)

    # -- reading ------------------------------------------------------------------------

    def session(self, session_id: str) -> SessionInfo:
        """The session with this id, or the only one whose id starts with it."""
        if not session_id:
            raise KeyError("an empty session id matches nothing")
        rows = self._select(f"{SESSION_SELECT} WHERE s.id = ?", session_id) or self._select(
            f"{SESSION_SELECT} WHERE substr(s.id, 1, ?) = ? LIMIT 2", len(session_id), session_id
        )
        if not rows:
            raise KeyError(f"no session with id {session_id!r} in {self.path}")
        if len(rows) > 1:
            raise KeyError(f"session id prefix {session_id!r} is ambiguous: give more characters")
        return session_info(rows[0])

    def sessions(self, limit: int = 50) -> list[SessionInfo]:
        """The newest sessions first (by creation), with their turn counts."""
        rows = self._select(f"{SESSION_SELECT} ORDER BY s.created DESC, s.rowid DESC LIMIT ?", limit)
        return [session_info(row) for row in rows]

    def load_turns(self, session_id: str) -> list[Turn]:
        """The conversation, in order, as the kernel keeps it."""
        rows = self._select("SELECT * FROM turns WHERE session_id = ? ORDER BY seq", self.session(session_id).id)
        return [
            Turn(
                role=row["role"],
                text=row["text"],
                id=row["seq"],
                tokens=None if row["tokens"] is None else tuple(json.loads(row["tokens"])),
                trusted=bool(row["trusted"]),
                source=row["source"],
                ended=bool(row["ended"]),
                meta=json.loads(row["meta"]),
            )
            for row in rows
        ]

    def events(self, session_id: str, kinds: list[str] | None = None) -> list[dict[str, Any]]:
        """Events in order: ``{"seq", "kind", "created", "data"}``, ``data`` being the event's fields."""
        rows = self._select("SELECT * FROM events WHERE session_id = ? ORDER BY seq", self.session(session_id).id)
        return [
            {"seq": row["seq"], "kind": row["kind"], "created": row["created"], "data": json.loads(row["data"])}
            for row in rows
            if kinds is None or row["kind"] in kinds
        ]

    def audit(self, session_id: str) -> list[dict[str, Any]]:
        """Policy decisions in order: call_id, name, decision, reasons, approved, created."""
        return self._table("audit", session_id)

    def export(self, session_id: str) -> dict[str, Any]:
        """The whole session as one JSON-ready dict."""
        info = self.session(session_id)
        return {
            "session": info.to_dict(),
            "turns": [turn_to_dict(turn) for turn in self.load_turns(info.id)],
            "events": self.events(info.id),
            "calls": self._table("calls", info.id),
            "results": self._table("results", info.id),
            "audit": self._table("audit", info.id),
        }

    def _table(self, table: str, session_id: str) -> list[dict[str, Any]]:
        """Rows of calls, results or audit, JSON columns decoded, without internal keys."""
        rows = self._select(f"SELECT * FROM {table} WHERE session_id = ? ORDER BY id", self.session(session_id).id)
        decoded = []
        for row in rows:
            item = dict(row)
            del item["id"], item["session_id"]
            for key in ("arguments", "artifacts", "reasons"):
                if key in item:
                    item[key] = json.loads(item[key])
            for key in ("is_error", "approved"):
                if item.get(key) is not None:
                    item[key] = bool(item[key])
            decoded.append(item)
        return decoded

    # -- closing ------------------------------------------------------------------------

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def event_columns(session_id: str, event: Event, stamp: str) -> dict[str, Any]:
    """The event's fields as a row of calls, results or audit, whose columns are exactly those fields.

    ``id`` (the call's id) becomes ``call_id``; lists and dicts are stored as JSON.
    """
    fields = {
        key: to_json(value) if isinstance(value, dict | list) else value for key, value in event.to_dict().items()
    }
    del fields["kind"]
    fields["call_id"] = fields.pop("id")
    return {"session_id": session_id, **fields, "created": stamp}


def insert(conn: sqlite3.Connection, table: str, verb: str = "INSERT", **values: Any) -> None:
    """One row; table and column names come from this module, never from data."""
    columns, marks = ", ".join(values), ", ".join("?" * len(values))
    conn.execute(f"{verb} INTO {table} ({columns}) VALUES ({marks})", tuple(values.values()))


def session_info(row: sqlite3.Row) -> SessionInfo:
    return SessionInfo(**dict(row) | {"meta": json.loads(row["meta"])})


def turn_to_dict(turn: Turn) -> dict[str, Any]:
    return dataclasses.asdict(turn) | {"tokens": None if turn.tokens is None else list(turn.tokens)}
