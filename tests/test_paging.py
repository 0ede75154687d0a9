"""Paging through the kernel on real llama.cpp: RAM stays inside the window, pages come back by recall."""

from __future__ import annotations

import json

import pytest
from helpers import need_module
from llmos_tools import ToolResult, Trust, load_tools, tool

from llmos.dialects.llmos import CALL, CALL_END, END, LlmosDialect
from llmos.kernel import Budgets, Kernel
from llmos.pager import Pager
from llmos.testing import scripted_llama

FACT = "The vault code word is PELICAN-7391."


def call(name, **arguments):
    return f"{CALL}{json.dumps({'name': name, 'arguments': arguments})}{CALL_END}"


def long_document(n_tokens: int) -> str:
    """About ``n_tokens`` tokens for a character-level vocabulary, with the fact on page 37 of 200-token pages."""
    paragraphs, size = [], 0
    while size < n_tokens:
        index = len(paragraphs)
        text = f"Paragraph {index}: the river kept moving past the mill, and the miller counted sacks of grain."
        if index == 36 * 2 + 1:  # two paragraphs of ~100 tokens per 200-token page
            text = f"Paragraph {index}: {FACT} Keep it secret."
        paragraphs.append(text)
        size += len(text) + 2
    return "\n\n".join(paragraphs)


@tool
def read_file(path: str) -> ToolResult:
    """Read a file.

    Args:
        path: the file to read
    """
    text = long_document(50_000)
    return ToolResult(text=text[:2000], trust=Trust.UNTRUSTED, source=path, whole_text=text)


def test_a_long_document_through_a_small_window(llmos_gguf, tmp_path):
    need_module("llmos_memory")
    script = [
        call("read_file", path="notes.txt"),
        call("open_page", document=1, page=2),
        call("open_page", document=1, page=3),
        call("open_page", document=1, page=4),
        call("open_page", document=1, page=5),
        call("recall", query="vault code word"),
        f"The code word is PELICAN-7391.{END}",
    ]
    cpu = scripted_llama(llmos_gguf, script, n_ctx=2048, n_threads=1)
    # this vocabulary is one character per token, so pages are small (200 tokens = 200 characters)
    pager = Pager(cpu, tmp_path / "memory.sqlite", reserve=256, page_tokens=200)
    tools = load_tools(allow={"memory"})
    tools.add(read_file)
    kernel = Kernel(
        cpu,
        LlmosDialect(),
        tools,
        pager=pager,
        workdir=tmp_path,
        budgets=Budgets(max_steps=10, max_step_tokens=200),
        system="Answer from the documents.",
    )
    events = list(kernel.ask("What is the vault code word in notes.txt?"))
    kinds = [e.kind for e in events]
    assert events[-1].kind == "done" and events[-1].reason == "answer", events[-2:]
    assert kinds.count("page_out") >= 3  # pages came and went
    assert all(e.shifted for e in events if e.kind == "page_out")  # by KV shift, not re-prefill
    recalled = next(e for e in events if e.kind == "result" and e.name == "recall")
    assert FACT in recalled.text
    assert any(e.kind == "page_in" for e in events)
    document = pager.store.document(1)
    assert document.n_pages >= 100 and FACT in pager.store.page(1, 37).text
    # the fact was in RAM when the answer was written, and RAM never overflowed
    assert FACT in "".join(t.text for t in kernel.turns if t.role == "result" and "paged_out" not in t.meta)
    assert len(cpu.tokens) <= cpu.n_ctx
    assert cpu.counters.reprefilled_tokens == 0
    summary = pager.summary()
    assert summary.used <= summary.capacity and summary.stubs >= 3
    cpu.close()
    pager.close()


def test_without_a_pager_the_same_session_reports_context_full(llmos_gguf, tmp_path):
    script = [call("read_file", path="notes.txt")] + [call("read_file", path="notes.txt")] * 3 + [f"x{END}"]
    cpu = scripted_llama(llmos_gguf, script, n_ctx=2048, n_threads=1)
    kernel = Kernel(cpu, LlmosDialect(), [read_file], workdir=tmp_path, budgets=Budgets(max_steps=10))
    events = list(kernel.ask("read it"))
    assert events[-2].kind == "error" and events[-2].code == "context_full"
    cpu.close()


@pytest.mark.parametrize("shift", [True, False])
def test_page_out_falls_back_to_reprefill_when_the_cpu_cannot_shift(llmos_gguf, tmp_path, shift):
    script = [call("read_file", path="a.txt")] + [call("read_file", path=f"{i}.txt") for i in range(4)] + [f"x{END}"]
    cpu = scripted_llama(llmos_gguf, script, n_ctx=2048, n_threads=1)
    cpu.can_shift = shift
    pager = Pager(cpu, tmp_path / "memory.sqlite")
    kernel = Kernel(cpu, LlmosDialect(), [read_file], pager=pager, workdir=tmp_path, budgets=Budgets(max_steps=10))
    events = list(kernel.ask("read them"))
    outs = [e for e in events if e.kind == "page_out"]
    assert outs and all(e.shifted is shift for e in outs)
    assert (cpu.counters.reprefilled_tokens == 0) is shift
    assert events[-1].reason == "answer"
    cpu.close()
    pager.close()


def test_a_page_brought_back_reuses_its_saved_kv_state(llmos_gguf, tmp_path):
    script = [
        call("read_file", path="notes.txt"),
        call("open_page", document=1, page=2),
        call("open_page", document=1, page=3),
        call("open_page", document=1, page=4),
        call("open_page", document=1, page=5),
        call("open_page", document=1, page=2),  # paged out by now: its KV state comes back
        f"Done.{END}",
    ]
    cpu = scripted_llama(llmos_gguf, script, n_ctx=2048, n_threads=1)
    pager = Pager(cpu, tmp_path / "memory.sqlite", reserve=256, page_tokens=200)
    tools = load_tools(allow={"memory"})
    tools.add(read_file)
    kernel = Kernel(cpu, LlmosDialect(), tools, pager=pager, workdir=tmp_path, budgets=Budgets(max_steps=10))
    events = list(kernel.ask("Read notes.txt"))
    assert events[-1].reason == "answer", events[-2:]
    outs = [e.page for e in events if e.kind == "page_out"]
    assert "1:2" in outs
    first, again = [t for t in kernel.turns if t.role == "result" and t.meta.get("page") == 2]
    assert again.text == first.meta["paged_out"]["text"]  # rendered as it was, so the saved cells fit
    assert cpu.counters.restored_tokens > 100 and cpu.counters.reprefilled_tokens == 0
    assert len(cpu.tokens) <= cpu.n_ctx
    cpu.close()
    pager.close()


def test_the_kernel_reads_typed_fields_not_a_tools_data_layout(tmp_path) -> None:
    """A browser-shaped ``data`` ({"pages": 3}, a count) once crashed the pager; typed fields carry what it needs."""
    from llmos_tools import Registry, ToolResult, Trust, tool

    from llmos.dialects.llmos import CALL, CALL_END, END, LlmosDialect
    from llmos.kernel import Kernel
    from llmos.pager import Pager
    from llmos.testing import ScriptedCPU

    @tool
    def read(url: str) -> ToolResult:
        """Read a page."""
        data = {"page": 1, "pages": 3, "text": "not what the kernel reads"}
        return ToolResult("page one", trust=Trust.UNTRUSTED, source=url, data=data, whole_text="page one two three")

    registry = Registry()
    registry.add(read)
    cpu = ScriptedCPU([CALL + '{"name": "read", "arguments": {"url": "http://x.test/"}}' + CALL_END, "done" + END])
    pager = Pager(cpu, tmp_path / "memory.sqlite", reserve=100)
    kernel = Kernel(cpu, LlmosDialect(), registry, pager=pager)
    events = list(kernel.ask("read it"))
    assert events[-1].kind == "done" and events[-1].answer == "done"
    assert not [e for e in events if e.kind == "page_in"]  # a count of pages is not a page-in
    assert kernel.documents["http://x.test/"] == "page one two three"
    pager.close()


def test_one_render_per_step_and_one_more_per_eviction_round(llmos_gguf, tmp_path):
    """The kernel renders the conversation once a step; only a step that evicts renders again."""
    renders: list[int] = []

    class CountingDialect(LlmosDialect):
        def render(self, turns, specs):
            renders.append(len(turns))
            return super().render(turns, specs)

    script = [call("read_file", path="a.txt")] + [call("read_file", path=f"{i}.txt") for i in range(4)] + [f"x{END}"]
    cpu = scripted_llama(llmos_gguf, script, n_ctx=2048, n_threads=1)
    pager = Pager(cpu, tmp_path / "memory.sqlite")
    rounds = []
    plan = pager.plan
    pager.plan = lambda turns, segments: rounds.append(evictions := plan(turns, segments)) or evictions  # type: ignore[method-assign]
    kernel = Kernel(cpu, CountingDialect(), [read_file], pager=pager, workdir=tmp_path, budgets=Budgets(max_steps=10))
    events = list(kernel.ask("read them"))
    assert events[-1].reason == "answer"
    generations = sum(1 for t in kernel.turns if t.role == "assistant")
    evicting = sum(1 for r in rounds if r)
    assert evicting >= 1 and [e.kind for e in events].count("page_out") >= evicting
    assert len(renders) == generations + evicting
    cpu.close()
    pager.close()
