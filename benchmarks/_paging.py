"""Paging measurements on the real llama.cpp CPU, used by ``benchmarks/memory.py``.

* ``pageout_speedup``: paging a 500-token page out of the middle of a 2,000-token
  context by KV shift (``LlamaCPU.replace_span``: cut, shift, evaluate a stub) versus
  re-prefilling everything after the page, as a context rebuilt from a common prefix
  must. Inverted so that bigger is better: re-prefill time ÷ shift time. Target ≥ 10.
* ``kv_restore_speedup``: bringing a 400-token page back after 1,000 tokens by restoring the
  KV cells saved when it was paged out (``LlamaCPU.save_span``/``restore_span``) versus
  evaluating it again. The pager keeps saved states because this wins by a wide margin.
* ``paged_recompute_ratio``: tokens evaluated ÷ distinct context tokens over a long
  paged session (a document read page by page, 15 pages of 200 tokens, through a
  4,096-token window of a one-character-per-token test vocabulary, then a recall).
  ``naive_paged_recompute_ratio``: the same session on a CPU that cannot
  shift, so each page-out re-evaluates the context from the page on — what rebuilding
  the context each step costs even with a prefix cache (llama-cpp-python's default).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from llmos_tools import ToolResult, Trust, load_tools, tool

REPO = Path(__file__).resolve().parent.parent
STORIES = REPO / "tests" / "fixtures" / "models" / "stories260K.gguf"
STORY = "Once upon a time, there was a little dog named Max. Max liked to run in the park with his friends. "


def _context(cpu, n_tokens: int, text: str = STORY) -> list[int]:
    tokens = cpu.tokenize(text, special=False)
    return [cpu.bos, *(tokens * (n_tokens // len(tokens) + 1))[: n_tokens - 1]]


def pageout_speedup(
    repeats: int = 7,
    *,
    model: Path = STORIES,
    n_ctx: int = 2048,
    n_tokens: int = 2000,
    span: tuple[int, int] = (750, 1250),
    threads: int = 1,
    text: str = STORY,
    restore: bool = False,
) -> dict[str, Any]:
    """Page ``span`` out of an ``n_tokens`` context of ``text`` (repeated): KV shift vs re-prefill from the cut.

    Between timings the whole context is put back: by evaluating it again from the cut, or
    with ``restore`` by restoring its KV state saved once (the same timed work, but much
    less time spent outside it on long contexts and slow models).
    """
    from llmos.cpu.llama import LlamaCPU

    cpu = LlamaCPU(model, n_ctx=n_ctx, n_threads=threads)
    context = _context(cpu, n_tokens, text)
    stub = cpu.tokenize(" [page 3 of story.txt, paged out]", special=False)
    start, end = span
    saved = _kv_state(cpu, context) if restore else None

    def whole_context() -> None:
        if saved is None:
            cpu.set_tokens(context)
            cpu._evaluate_pending()
        else:
            cpu.restore_state(saved, context)

    shift_times, prefill_times = [], []
    for _ in range(repeats):
        whole_context()
        began = time.perf_counter()
        cpu.replace_span(start, end, stub)
        cpu._evaluate_pending()  # the logits for the next step, as a generation would need
        shift_times.append(time.perf_counter() - began)
        whole_context()
        began = time.perf_counter()
        cpu.truncate(start)
        cpu.tokens.extend(stub + context[end:])
        cpu._evaluate_pending()
        prefill_times.append(time.perf_counter() - began)
    cpu.close()
    shift, prefill = statistics.median(shift_times), statistics.median(prefill_times)
    return {
        "pageout_speedup": round(prefill / shift, 1),
        "pageout_shift_ms": round(shift * 1000, 2),
        "pageout_reprefill_ms": round(prefill * 1000, 2),
    }


def _kv_state(cpu, context: list[int]) -> bytes:
    """The KV state of ``context`` once evaluated (``LlamaCPU.save_state``)."""
    cpu.set_tokens(context)
    return cpu.save_state()


def kv_restore_speedup(repeats: int = 5) -> dict[str, Any]:
    """Page-in of a 400-token page after 1,000 tokens: restoring its saved KV cells vs evaluating it."""
    from llmos.cpu.llama import LlamaCPU

    cpu = LlamaCPU(STORIES, n_ctx=2048, n_threads=1)
    prefix = _context(cpu, 1000)
    page = (cpu.tokenize("Lily had a red ball. She threw it high and her cat jumped after it. ", special=False) * 40)[
        :400
    ]
    cpu.set_tokens(prefix + page)
    cpu._evaluate_pending()
    saved = cpu.save_span(1000, 1400)
    restore_times, prefill_times = [], []
    for _ in range(repeats):
        cpu.truncate(1000)
        cpu._evaluate_pending()
        began = time.perf_counter()
        cpu.restore_span(saved, page, 1000)
        cpu._evaluate_pending()  # logits for the next token
        restore_times.append(time.perf_counter() - began)
        cpu.truncate(1000)
        cpu._evaluate_pending()
        began = time.perf_counter()
        cpu.tokens.extend(page)
        cpu._evaluate_pending()
        prefill_times.append(time.perf_counter() - began)
    cpu.close()
    restore, prefill = statistics.median(restore_times), statistics.median(prefill_times)
    return {
        "kv_restore_speedup": round(prefill / restore, 1),
        "kv_restore_ms": round(restore * 1000, 2),
        "kv_prefill_ms": round(prefill * 1000, 2),
        "kv_saved_bytes_per_token": len(saved) // len(page),
    }


def _paged_session(model: Path, folder: Path, can_shift: bool) -> float:
    from llmos.dialects.llmos import CALL, CALL_END, END, LlmosDialect
    from llmos.events import Done
    from llmos.kernel import Budgets, Kernel
    from llmos.pager import Pager
    from llmos.testing import scripted_llama

    text = "\n\n".join(f"Paragraph {i}: the miller counted {i * 7} sacks of grain by the river." for i in range(600))

    @tool
    def read_file(path: str) -> ToolResult:
        """Read a file.

        Args:
            path: the file
        """
        return ToolResult(text=text[:600], trust=Trust.UNTRUSTED, source=path, whole_text=text)

    def call(name: str, **arguments: Any) -> str:
        return f"{CALL}{json.dumps({'name': name, 'arguments': arguments})}{CALL_END}"

    script = [call("read_file", path="mill.txt")]
    script += [call("open_page", document=1, page=n) for n in range(2, 16)]
    script += [call("recall", query="miller counted 2100 sacks"), f"It was paragraph 300.{END}"]
    cpu = scripted_llama(model, script, n_ctx=4096, n_threads=1)
    cpu.can_shift = can_shift
    pager = Pager(cpu, folder / f"memory-{can_shift}.sqlite", page_tokens=200)
    tools = load_tools(allow={"memory"})
    tools.add(read_file)
    kernel = Kernel(
        cpu,
        LlmosDialect(),
        tools,
        pager=pager,
        workdir=folder,
        budgets=Budgets(max_steps=20),
        settings={"memory_recall_pages": 1, "memory_recall_more": 1},
    )
    events = list(kernel.ask("Which paragraph mentions 2100 sacks?"))
    assert isinstance(events[-1], Done) and events[-1].reason == "answer", events[-2:]
    ratio = cpu.counters.recompute_ratio()
    cpu.close()
    pager.close()
    return round(ratio, 4)


def paged_recompute() -> dict[str, Any]:
    from llmos.dialects.llmos import SPECIAL_TOKENS
    from llmos.testing import write_tiny_gguf

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        model = write_tiny_gguf(folder / "llmos-bench.gguf", SPECIAL_TOKENS, n_ctx=4096)
        return {
            "paged_recompute_ratio": _paged_session(model, folder, True),
            "naive_paged_recompute_ratio": _paged_session(model, folder, False),
        }


if __name__ == "__main__":
    print(json.dumps({**pageout_speedup(), **kv_restore_speedup(), **paged_recompute()}))
