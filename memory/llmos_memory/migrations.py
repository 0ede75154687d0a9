"""Schema migrations for llmos's SQLite files: one runner for every store.

Contract
--------
* A file's schema version is ``PRAGMA user_version``; ``migrations[i]`` (a list of SQL
  statements) brings version ``i`` to ``i + 1``. Released migrations are never edited:
  a schema change appends one.
* :func:`migrate` applies the missing ones, each in its own ``BEGIN IMMEDIATE``
  transaction with its version bump, so a crash leaves the file at a whole version and
  two processes opening a new file migrate one after the other (the second sees the
  first's version inside its transaction and applies nothing twice).
* A file newer than the code is refused with :class:`StoreError`, never rewritten; a
  failing statement rolls its migration back and raises :class:`StoreError` naming the
  file and the version.

The connection must be in autocommit mode (``isolation_level=None``): the runner says
BEGIN and COMMIT itself. :func:`use_wal` switches a file to write-ahead logging even while
other connections are opening it. Not covered: downgrades.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from llmos_errors import LlmosError


class StoreError(LlmosError):
    """A store (sessions, pages) cannot do what was asked (cannot open, schema too new, bad input)."""


def user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, migrations: Sequence[Sequence[str]], path: str | Path) -> None:
    """Bring the file's schema up to ``len(migrations)`` (see the module contract)."""
    refuse_newer(db, migrations, path)
    for number, statements in enumerate(migrations, start=1):
        if user_version(db) >= number:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            if user_version(db) < number:  # not already done by another process while we waited
                for statement in statements:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            db.execute("ROLLBACK")
            raise StoreError(f"cannot upgrade {path} to schema version {number}: {exc}") from exc
        except BaseException:
            db.execute("ROLLBACK")
            raise


def refuse_newer(db: sqlite3.Connection, migrations: Sequence[Sequence[str]], path: str | Path) -> None:
    """Raise :class:`StoreError` if the file was written by a newer llmos."""
    version = user_version(db)
    if version > len(migrations):
        raise StoreError(
            f"{path} has schema version {version}, newer than this llmos understands "
            f"({len(migrations)}); upgrade llmos to open it"
        )


def use_wal(db: sqlite3.Connection, timeout: float = 10.0) -> None:
    """``PRAGMA journal_mode = WAL``, retried while another connection holds the file's lock.

    SQLite answers this pragma "database is locked" at once, without the busy handler, when another
    connection is opening a new file at the same moment (1 to 3 opens in 100 lost that way when three
    threads opened one new store together), so the retry is ours."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
