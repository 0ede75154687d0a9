"""The memory store: pages, ingest (text, HTML, PDF), BM25 search, migrations, crash safety, the memory app."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import need_module
from llmos_memory import (
    MIGRATIONS,
    ExtractError,
    KVState,
    PageNotFound,
    Store,
    StoreError,
    estimate_tokens,
    split_pages,
)

# -- pages --------------------------------------------------------------------------------------


def test_split_pages_respects_budget_and_keeps_every_word() -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * (10 + i * 7) for i in range(40)]
    text = "\n\n".join(paragraphs)
    pages = split_pages(text, estimate_tokens, page_tokens=120)
    assert len(pages) > 5
    assert all(n <= 120 for _, n in pages)
    assert all(n == estimate_tokens(page) for page, n in pages)  # counts are of the final text
    assert " ".join(p for p, _ in pages).split() == text.split()


def test_split_pages_cuts_at_paragraphs_when_they_fit() -> None:
    paragraphs = ["alpha " * 30, "beta " * 30, "gamma " * 30]
    pages = split_pages("\n\n\n".join(paragraphs), estimate_tokens, page_tokens=60)
    assert [p for p, _ in pages] == [p.strip() for p in paragraphs]


def test_split_pages_cuts_a_huge_word_by_characters() -> None:
    blob = "x" * 5000
    pages = split_pages(f"start {blob} end", estimate_tokens, page_tokens=64)
    assert all(n <= 64 for _, n in pages)
    assert "".join(p.replace(" ", "") for p, _ in pages) == f"start{blob}end"


def test_split_pages_uses_the_callers_token_counter() -> None:
    pages = split_pages("one two three four five six", lambda s: len(s.split()), page_tokens=8)
    assert pages == [("one two three four five six", 6)]
    assert split_pages("  \n\n ") == []
    with pytest.raises(ValueError):
        split_pages("text", page_tokens=0)


# -- ingest and search ----------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "memory.sqlite", page_tokens=100) as opened:
        yield opened


def test_add_text_stores_pages_with_provenance(store: Store) -> None:
    doc = store.add_text("First paragraph.\n\n" + "filler text " * 200, "tool:browser", title="A page")
    assert doc.n_pages == len(store.pages(doc.id)) > 1
    first = store.page(doc.id, 1)
    assert first.number == 1 and first.text.startswith("First paragraph.")
    assert (first.source, first.trust, first.title) == ("tool:browser", "untrusted", "A page")
    assert doc.n_tokens == sum(p.n_tokens for p in store.pages(doc.id))
    with pytest.raises(PageNotFound, match=f"has no page 999; it has pages 1 to {doc.n_pages}"):
        store.page(doc.id, 999)
    with pytest.raises(PageNotFound, match="no document 42"):
        store.page(42, 1)


def test_same_text_from_same_source_is_stored_once(store: Store) -> None:
    first = store.add_text("the same words", "file:///a.txt")
    assert store.add_text("the same words", "file:///a.txt").id == first.id
    assert store.add_text("the same words", "file:///b.txt").id != first.id


def test_bm25_ranks_pages_with_more_and_rarer_matches_first(store: Store) -> None:
    store.add_text("The zebra crossed the road. Nothing else happened that day at all.", "a")
    store.add_text("Zebra zebra zebra: a zebra herd met another zebra near the zebra pond.", "b")
    store.add_text("A road trip with no animals, just a long road and more road.", "c")
    store.add_text("The zebra and the quagga are relatives, the quagga being extinct.", "d")
    hits = store.search("zebra")
    assert [h.page.source for h in hits][:1] == ["b"]
    assert {h.page.source for h in hits} == {"a", "b", "d"}
    assert hits == sorted(hits, key=lambda h: -h.score)
    assert "[zebra]" in hits[0].snippet.lower()
    # Pages with every word come before pages with only some of them.
    both = store.search("zebra road")
    assert both[0].page.source == "a"
    assert {h.page.source for h in both} == {"a", "b", "c", "d"}


def test_common_words_select_but_do_not_rank(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import llmos_memory.store as store_module

    monkeypatch.setattr(store_module, "RARE_PAGES", 2)  # words in more than 2 pages count as common
    monkeypatch.setattr(store_module, "COMMON_FRACTION", 0.0)
    for i in range(6):
        store.add_text(
            f"alpha gamma page {i}" + (" beta" if i in (1, 4) else "") + (" delta" if i == 4 else ""), f"s{i}"
        )
    newest = store.search("alpha gamma", limit=3)  # common words only: newest pages, unranked
    assert [h.page.source for h in newest] == ["s5", "s4", "s3"] and {h.score for h in newest} == {0.0}
    ranked = store.search("alpha beta delta")
    assert [h.page.source for h in ranked] == ["s4", "s1"] and ranked[0].score > 0


def test_search_treats_query_syntax_as_plain_words(store: Store) -> None:
    store.add_text("Quotes and stars: a NEAR miss, OR not.", "a")
    for query in ['"unbalanced', "star*", "NEAR(a b)", "OR AND NOT", "col:umn", "snake_case ^x"]:
        store.search(query)  # no FTS5 syntax error leaks out
    assert store.search("unknownword") == []
    with pytest.raises(StoreError, match="no words"):
        store.search("?! ...")


def test_html_file_keeps_readable_text_only(store: Store, tmp_path: Path) -> None:
    page = tmp_path / "scale-ai.html"
    page.write_text(
        "<html><head><title>Scale &amp; AI</title><style>.x{color:red}</style></head><body>"
        "<script>var secret = 'do not index';</script><h1>Data engines</h1><p>Labels at scale.</p>"
        "<p>Second&nbsp;paragraph.</p></body></html>"
    )
    doc = store.add_file(page)
    text = store.page(doc.id, 1).text
    assert doc.title == "Scale & AI" and doc.kind == "html"
    assert "Data engines" in text and "Labels at scale." in text and "Second\xa0paragraph." in text
    assert "secret" not in text and "color" not in text
    assert store.add_html("<p>Rendered by the browser</p>", "https://example.test/").kind == "html"


def tiny_pdf(lines: list[str]) -> bytes:
    """A valid one-page PDF with a text layer, written by hand (pypdf cannot author text)."""
    content = " ".join(f"BT /F1 12 Tf 72 {720 - 20 * i} Td ({line}) Tj ET" for i, line in enumerate(lines)).encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return out


def test_pdf_file_is_ingested_and_searchable(store: Store, tmp_path: Path) -> None:
    need_module("pypdf")
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(tiny_pdf(["Quarterly report", "Revenue grew by seventeen percent"]))
    doc = store.add_file(pdf)
    assert doc.kind == "pdf" and doc.title == "report.pdf"
    assert "seventeen percent" in store.page(doc.id, 1).text
    assert store.search("revenue seventeen")[0].page.document_id == doc.id


def test_bad_input_raises_clearly_and_loses_nothing(store: Store, tmp_path: Path) -> None:
    kept = store.add_text("an existing document", "keep")
    (tmp_path / "blob.txt").write_bytes(b"\x00\x01binary\x00")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    bad = [
        (lambda: store.add_file(tmp_path / "missing.txt"), ExtractError, "no such file"),
        (lambda: store.add_file(tmp_path / "blob.txt"), ExtractError, "binary"),
        (lambda: store.add_text("   \n\n  ", "empty"), StoreError, "empty"),
        (lambda: store.add_text("text", "src", trust="sort of"), StoreError, "trust must be one of"),
        (lambda: store.add_text("text", ""), StoreError, "needs a source"),
        (lambda: store.add_file(tmp_path / "broken.pdf"), ExtractError, "not a readable PDF|needs pypdf"),
    ]
    before = store.stats()
    for call, error, message in bad:
        with pytest.raises(error, match=message):
            call()
    assert store.stats() == before
    assert store.page(kept.id, 1).text == "an existing document"
    store.check()


def test_last_use_and_saved_kv_states(store: Store) -> None:
    doc = store.add_text("a page worth keeping", "user", trust="trusted")
    page = store.page(doc.id, 1)
    store.touch([page.id], when=123.0)
    again = store.page(doc.id, 1)
    assert (again.last_used, again.trust) == (123.0, "trusted")
    state = KVState(b"\x00kv-bytes", (5, 6, 70_000), start=12)
    store.save_kv(page.id, "llmos-tiny", state)
    assert store.load_kv(page.id, "llmos-tiny") == state and store.has_kv(page.id, "llmos-tiny")
    assert store.load_kv(page.id, "other-model") is None
    with pytest.raises(PageNotFound):
        store.save_kv(999_999, "llmos-tiny", KVState(b"x", (1,)))
    store.delete_document(doc.id)
    assert store.load_kv(page.id, "llmos-tiny") is None  # swap goes with its page
    assert store.search("keeping") == []
    store.check()


# -- migrations -------------------------------------------------------------------------------------


def test_new_store_is_at_the_latest_schema_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    with Store(path) as store:
        assert store.version == len(MIGRATIONS)
        store.add_text("persisted", "x")
    with Store(path) as store:
        assert store.version == len(MIGRATIONS)
        assert store.search("persisted")[0].page.text == "persisted"


def test_store_newer_than_the_code_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE from_the_future (x)")
    raw.execute("PRAGMA user_version = 99")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="schema version 99, newer than"):
        Store(path)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 99
    assert raw.execute("SELECT name FROM sqlite_master").fetchall() == [("from_the_future",)]
    raw.close()


# -- crash safety ------------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys
    from llmos_memory import Store

    def document(i):
        return "\\n\\n".join(f"document {i} paragraph {p} " + "lorem ipsum dolor sit amet " * 12 for p in range(40))

    if __name__ == "__main__":
        store = Store(sys.argv[1], page_tokens=120)
        for i in range(100_000):  # bounded; the parent kills it long before
            doc = store.add_text(document(i), f"doc-{i}")
            print(doc.id, i, flush=True)
    """
)


def test_kill_9_mid_ingest_keeps_every_committed_page(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    namespace: dict = {}
    exec(CHILD.replace('if __name__ == "__main__":', "if False:"), namespace)
    child = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    committed: dict[int, int] = {}
    deadline = time.monotonic() + 30
    try:
        assert child.stdout is not None
        while len(committed) < 25 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            doc_id, index = map(int, line.split())
            committed[doc_id] = index
    finally:
        os.kill(child.pid, signal.SIGKILL)  # mid-ingest: it was writing the next document
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    assert len(committed) >= 25, "the child did not commit documents in time"

    with Store(path, page_tokens=120) as store:
        store.check()
        for doc_id, index in committed.items():
            expected = split_pages(namespace["document"](index), estimate_tokens, 120)
            assert [(p.text, p.n_tokens) for p in store.pages(doc_id)] == expected
            assert store.document(doc_id).n_pages == len(expected)
        # A document committed after the last line was read is complete too; none is partial.
        for doc in store.documents(limit=1000):
            assert len(store.pages(doc.id)) == doc.n_pages
        assert store.search(f"document {max(committed.values())} paragraph 7")
        store.add_text("writes still work", "after-crash")


# -- the memory app ------------------------------------------------------------------------------------


def test_memory_app_recall_and_open_page(tmp_path: Path) -> None:
    from llmos_apps import memory_app
    from llmos_tools import ToolContext, ToolError, Trust, load_tools

    tools = load_tools(extra_plugins=[memory_app], allow=set())
    assert {"recall", "open_page"} <= set(tools.names()), tools.problems
    context = ToolContext(workdir=tmp_path, settings={"memory_db": str(tmp_path / "m.sqlite")})
    with Store(tmp_path / "m.sqlite", page_tokens=60) as store:
        chapters = [f"Chapter {i}. " + "plain filler words " * 12 for i in range(8)]
        story = "\n\n".join([*chapters, "The lighthouse keeper hid the brass key."])
        doc = store.add_text(story, "https://example.test/story")

    result = tools["recall"].run({"query": "brass key lighthouse"}, context)
    assert result.trust == Trust.UNTRUSTED and result.source == "https://example.test/story"
    assert "The lighthouse keeper hid the brass key." in result.text
    assert result.data["pages"][0]["document"] == doc.id

    opened = tools["open_page"].run({"document": doc.id, "page": 2}, context)
    assert opened.trust == Trust.UNTRUSTED and opened.source == "https://example.test/story"
    assert "Chapter" in opened.text and opened.data["pages"][0]["page"] == 2

    assert "no stored page matches" in tools["recall"].run({"query": "submarine"}, context).text
    with pytest.raises(ToolError, match="has no page 99"):
        tools["open_page"].run({"document": doc.id, "page": 99}, context)
    with pytest.raises(ToolError, match="no words"):
        tools["recall"].run({"query": "!!"}, context)
    with pytest.raises(ToolError):
        tools["open_page"].run({"document": "three", "page": 1}, context)


def test_memory_app_defaults_to_a_store_under_workdir(tmp_path: Path) -> None:
    from llmos_apps import memory_app
    from llmos_tools import ToolContext

    context = ToolContext(workdir=tmp_path)
    assert memory_app.store_path(context) == tmp_path / "memory.sqlite"
    assert "no stored page matches" in memory_app.recall.run({"query": "anything"}, context).text
    assert (tmp_path / "memory.sqlite").exists()


def test_saved_kv_states_keep_within_their_byte_budget(store: Store) -> None:
    """Swap is bounded: the oldest states of a model go first, the newest always stays."""
    pages = [store.page(store.add_text(f"page number {i}", "user").id, 1) for i in range(4)]
    for page in pages:
        store.save_kv(page.id, "m", KVState(b"x" * 100, (1,)), max_bytes=250)
    assert [store.has_kv(p.id, "m") for p in pages] == [False, False, True, True]
    store.save_kv(pages[0].id, "m", KVState(b"x" * 1000, (1,)), max_bytes=250)
    assert [store.has_kv(p.id, "m") for p in pages] == [True, False, False, False]
    assert store.drop_kv("m", page_id=pages[0].id) == 1


def test_a_version_1_file_is_upgraded_and_keeps_its_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import llmos_memory.store as store_module

    path = tmp_path / "old.sqlite"
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS[:1])
    with Store(path) as old:
        document = old.add_text("a page from before the upgrade", "user")
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)
    with Store(path) as store:
        assert store.version == len(MIGRATIONS) == 2
        page = store.page(document.id, 1)
        assert page.text == "a page from before the upgrade"
        store.save_kv(page.id, "m", KVState(b"kv", (1, 2), start=3))
        assert store.load_kv(page.id, "m") == KVState(b"kv", (1, 2), start=3)
