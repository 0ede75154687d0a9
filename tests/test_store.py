"""The session store, on real SQLite files: round trips, migrations, crash safety, bad files."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos import store as store_module
from llmos.dialects.base import Turn
from llmos.events import ArtifactEvent, CallEvent, Done, PolicyDecision, Progress, ResultEvent, Token
from llmos.store import MIGRATIONS, SessionStore, StoreError, default_store_path

CALL = CallEvent(id="c1", name="calculator", arguments={"expression": "400/1400"}, raw='{"name": "calculator"}')
POLICY = PolicyDecision(id="c1", name="calculator", decision="ask", reasons=["argument from a web page"], approved=True)
RESULT = ResultEvent(
    id="c1", name="calculator", text="0.2857", is_error=False, trust="trusted", source="calculator", seconds=0.01
)
DONE = Done(answer="about 29%", reason="answer", steps=2, counters={"tokens_evaluated": 120.0})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SessionStore]:
    with SessionStore(tmp_path / "sessions.db") as opened:
        yield opened


def test_turns_round_trip_with_tokens_and_meta(store: SessionStore) -> None:
    sid = store.new_session(title="percent", model="tiny", dialect="llmos", meta={"task": "t.yaml"})
    turns = [
        Turn(role="system", text="You are llmos.", id=0),
        Turn(role="user", text="what is 400/1400?", id=1),
        Turn(role="assistant", text="", id=2, tokens=(5, 17, 2), meta={"call": "c1"}),
        Turn(role="result", text="0.2857", id=3, trusted=False, source="https://example.com"),
        Turn(role="assistant", text="about 29%", id=4, tokens=(), ended=True),
    ]
    for turn in turns:
        store.save_turn(sid, turn)
    store.save_turn(sid, dataclasses.replace(turns[4], text="about 28.6%", tokens=(9, 9)))  # the chunk grew

    expected = [*turns[:4], dataclasses.replace(turns[4], text="about 28.6%", tokens=(9, 9))]
    assert store.load_turns(sid) == expected
    info = store.session(sid)
    assert (info.title, info.model, info.dialect, info.meta, info.turns) == (
        "percent",
        "tiny",
        "llmos",
        {"task": "t.yaml"},
        5,
    )


def test_events_calls_results_and_audit(store: SessionStore) -> None:
    sid = store.new_session()
    assert store.session(sid).status == "new"
    for event in (Token("about"), CALL, POLICY, RESULT, ArtifactEvent(path="/tmp/a.png", mime="image/png"), DONE):
        store.record(sid, event)

    events = store.events(sid)
    assert [e["kind"] for e in events] == ["call", "policy", "result", "artifact", "done"]  # tokens are skipped
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert events[0]["data"] == {"id": "c1", "name": "calculator", "arguments": {"expression": "400/1400"},
                                 "raw": '{"name": "calculator"}'}  # fmt: skip
    assert store.events(sid, kinds=["done"])[0]["data"]["counters"] == {"tokens_evaluated": 120.0}
    assert store.audit(sid) == [
        {"call_id": "c1", "name": "calculator", "decision": "ask", "reasons": ["argument from a web page"],
         "approved": True, "created": store.audit(sid)[0]["created"]}
    ]  # fmt: skip
    exported = json.loads(json.dumps(store.export(sid)))  # JSON-ready as promised
    assert exported["calls"][0]["decision"] == "allow"  # the person approved the "ask"
    assert exported["results"][0] | {"created": None} == {
        "call_id": "c1", "name": "calculator", "text": "0.2857", "is_error": False, "trust": "trusted",
        "source": "calculator", "seconds": 0.01, "artifacts": [], "created": None,
    }  # fmt: skip
    assert exported["session"]["status"] == "answer"
    assert len(exported["events"]) == 5


def test_tokens_are_kept_when_asked(tmp_path: Path) -> None:
    with SessionStore(tmp_path / "s.db", keep_tokens=True) as store:
        sid = store.new_session()
        assert store.record(sid, Token("hi")) == 1
        assert store.events(sid) == [{"seq": 1, "kind": "token", "created": store.events(sid)[0]["created"],
                                      "data": {"text": "hi"}}]  # fmt: skip


def test_event_tables_have_the_event_fields_as_columns(store: SessionStore) -> None:
    """record() writes calls/results/audit straight from the event's fields."""
    for table, event_type in (("calls", CallEvent), ("results", ResultEvent), ("audit", PolicyDecision)):
        columns = {row[1] for row in store._conn.execute(f"PRAGMA table_info({table})")}
        fields = {f.name for f in dataclasses.fields(event_type)} - {"id"} | {"call_id"}
        assert fields <= columns, table


def test_non_json_values_do_not_break_recording(store: SessionStore) -> None:
    sid = store.new_session(meta={"where": Path("/tmp/x")})
    store.record(sid, Progress(name="imagegen", data={"step": 3, "path": Path("/tmp/y")}))
    assert store.session(sid).meta == {"where": "/tmp/x"}
    assert store.events(sid)[0]["data"]["data"] == {"step": 3, "path": "/tmp/y"}


def test_sessions_newest_first_with_turn_counts(store: SessionStore) -> None:
    ids = [store.new_session(title=f"s{n}") for n in range(3)]
    store.save_turn(ids[0], Turn(role="user", text="hi", id=1))
    listed = store.sessions()
    assert [s.id for s in listed] == ids[::-1]
    assert [s.turns for s in listed] == [0, 0, 1]
    assert [s.id for s in store.sessions(limit=2)] == ids[:0:-1]


def test_prefix_lookup_and_unknown_ids(store: SessionStore, monkeypatch: pytest.MonkeyPatch) -> None:
    made = iter(["abc111", "abc222", "xyz333"])
    monkeypatch.setattr(store_module, "new_session_id", lambda: next(made))
    for _ in range(3):
        store.new_session()
    assert store.session("abc1").id == "abc111"
    assert store.session("xyz333").id == "xyz333"
    assert len(store.load_turns("x")) == 0  # reads accept a prefix too
    with pytest.raises(KeyError, match="ambiguous"):
        store.session("abc")
    with pytest.raises(KeyError, match="no session with id 'nope'"):
        store.session("nope")
    with pytest.raises(KeyError, match="no session"):
        store.events("nope")
    with pytest.raises(KeyError, match="no session"):
        store.record("abc1", DONE)  # writes take the exact id
    with pytest.raises(KeyError, match="no session"):
        store.save_turn("nope", Turn(role="user", text="hi"))


def test_reopening_is_idempotent_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "sessions.db"  # the folder is created
    with SessionStore(path) as store:
        sid = store.new_session(title="kept")
    with SessionStore(path) as store:
        assert store.session(sid).title == "kept"
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


def test_threads_opening_a_new_store_at_once_all_get_it(tmp_path: Path) -> None:
    """Sessions of one process open their stores in their own threads: a new file's switch to WAL lost
    one open in about a hundred to "database is locked" (and a session thread that dies there leaves
    its job waiting)."""
    from llmos_memory.store import Store

    failures: list[BaseException] = []

    def open_both(folder: Path, together: threading.Barrier) -> None:
        try:
            together.wait(timeout=10)
            SessionStore(folder / "s.db").close()
            Store(folder / "m.sqlite").close()
        except BaseException as exc:  # collected and asserted below
            failures.append(exc)

    for i in range(250):
        together = threading.Barrier(3)
        threads = [threading.Thread(target=open_both, args=(tmp_path / str(i), together)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == []


def test_upgrade_from_an_older_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sessions.db"
    with SessionStore(path) as store:
        sid = store.new_session(title="old")
    monkeypatch.setattr(store_module, "MIGRATIONS", [*MIGRATIONS, ["ALTER TABLE sessions ADD COLUMN note TEXT"]])
    with SessionStore(path) as store:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
        row = store._conn.execute("SELECT title, note FROM sessions WHERE id = ?", (sid,)).fetchone()
        assert tuple(row) == ("old", None)
    SessionStore(path).close()  # applied once: a second ALTER would fail


def test_failed_migration_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sessions.db"
    SessionStore(path).close()
    broken = "ALTER TABLE sessions ADD COLUMN note TEXT; SELECT * FROM no_such_table;"
    monkeypatch.setattr(store_module, "MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(StoreError, match=r"cannot upgrade .* to schema version 2"):
        SessionStore(path)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert "note" not in {row[1] for row in raw.execute("PRAGMA table_info(sessions)")}
    raw.close()


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    SessionStore(path).close()
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(StoreError, match="newer than this llmos knows"):
        SessionStore(path)


def test_bad_files_give_a_store_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, just some text\n" * 200)
    with pytest.raises(StoreError, match=r"garbage\.db"):
        SessionStore(garbage)

    foreign = tmp_path / "foreign.db"
    raw = sqlite3.connect(foreign)
    raw.execute("CREATE TABLE photos (id INTEGER)")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="not an llmos session store"):
        SessionStore(foreign)
    assert sqlite3.connect(foreign).execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # left untouched

    with pytest.raises(StoreError, match="cannot open"):
        SessionStore(tmp_path)  # a folder


def test_a_closed_store_raises_store_error(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "s.db")
    sid = store.new_session()
    store.close()
    with pytest.raises(StoreError):
        store.record(sid, DONE)
    with pytest.raises(StoreError):
        store.sessions()


def test_default_store_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path))
    assert default_store_path() == tmp_path / "sessions.db"
    monkeypatch.delenv("LLMOS_HOME")
    assert default_store_path() == Path.home() / ".local/share/llmos/sessions.db"


CHILD = """
import sys
from llmos.events import Progress
from llmos.store import SessionStore

store = SessionStore(sys.argv[1])
session_id = sys.argv[2]
n = 0
while True:
    store.record(session_id, Progress(name="loop", data={"n": n + 1}))
    n += 1
    print(n, flush=True)  # only after record() returned: n events are committed
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX kill -9")
def test_kill_9_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    with SessionStore(path) as store:
        sid = store.new_session()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), sid], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    reported = 0
    for line in child.stdout:  # let it get well into its loop, then kill it mid-write
        reported = int(line)
        if reported >= 300:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    reported = max([reported, *(int(line) for line in child.stdout.read().split())])  # printed before the kill
    child.stdout.close()

    with SessionStore(path) as store:
        numbers = [event["data"]["data"]["n"] for event in store.events(sid)]
        assert store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert reported >= 300
    assert numbers[:reported] == list(range(1, reported + 1))
    assert len(numbers) - reported in (0, 1)  # at most the one committed after the last print
