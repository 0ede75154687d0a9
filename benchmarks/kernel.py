"""Kernel benchmark: decode throughput, KV recompute, start-up time.

    python benchmarks/kernel.py --json

Figures (each measured side by side with its baseline in this process, medians):

* ``throughput_ratio``: tokens/s decoding through the kernel (dialect parser and
  events on) ÷ tokens/s of a plain llama-cpp-python ``Llama.eval``/``Llama.sample``
  loop, same model, same number of tokens, same thread count. Target ≥ 0.95.
* ``recompute_ratio``: tokens evaluated ÷ distinct context tokens over a session of
  10 tool calls through the kernel. Target 1.00. ``naive_recompute_ratio``: the same
  session driven the common way, re-rendering the whole prompt each step and calling
  ``Llama.create_completion`` (which does reuse a common token prefix).
* ``help_seconds`` (``llmos --help``, whole process; target < 0.3) and
  ``import_seconds`` (``import llmos`` in a fresh interpreter; target < 0.15).

Models: the story model in the repository (``tests/fixtures/models/stories260K.gguf``)
for throughput, and a random-weight GGUF with the llmos special tokens (written to a
temporary folder) for the tool-call session. Both are tiny, so per-token overhead
weighs more here than it would on a real model: the ratio is a lower bound.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STORIES = REPO / "tests" / "fixtures" / "models" / "stories260K.gguf"
PROMPT = "Once upon a time, there was a little girl named Lily. She loved to"


def throughput_once(
    model: Path,
    n_tokens: int,
    threads: int,
    *,
    prompt: str = PROMPT,
    n_ctx: int = 512,
    dialect: str = "generic",
    plain: Callable[..., Any] | None = None,
) -> tuple[float, float, int]:
    """Decode through the kernel and through a plain loop, one token each in turn.

    Interleaving token by token puts both under the same machine load (this machine
    is shared and noisy); each side's time is the sum of its own steps, and the order
    alternates so neither always inherits the other's warm caches. Both sides count
    tokens, not events: where the dialect's parser holds a piece back (a possible
    marker), one kernel step decodes several tokens and the plain loop catches up.

    ``dialect`` is the kernel's (``hermes``: the model's own chat template); ``plain``
    builds the baseline ``Llama`` (``plain(model, n_ctx=…, n_threads=…, n_threads_batch=…)``,
    e.g. :func:`llmos.testing.plain_llama`; by default ``llama_cpp.Llama`` itself). Both sides
    decode on llmos's compute thread (:mod:`llmos.cpu.compute`), as one team of llama.cpp threads.
    """
    from llmos.cpu.llama import LlamaCPU
    from llmos.kernel import Budgets, Kernel
    from llmos.models import open_machine
    from llmos.testing import on_compute_thread

    if plain is None:
        from llama_cpp import Llama

        def plain(path: Path, **options: Any) -> Any:
            return on_compute_thread(Llama(str(path), verbose=False, **options))

    llm = plain(model, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads)
    machine = open_machine(str(model), dialect=dialect, n_ctx=n_ctx, n_threads=threads)
    cpu = machine.cpu
    assert isinstance(cpu, LlamaCPU)  # both sides decode on llama.cpp: the kernel's context is replayed
    budgets = Budgets(max_step_tokens=n_tokens, max_tokens=n_tokens)
    kernel = Kernel(cpu, machine.dialect, [], system="", budgets=budgets)
    events = kernel.ask(prompt)
    next(events)  # prefill and first token: not part of the decode rate
    llm.eval(cpu.tokens)  # the same context, so both attend over the same number of positions
    first = cpu.counters.tokens_sampled
    ours = theirs = 0.0
    steps = plain_tokens = 0

    def plain_token() -> float:
        started = time.perf_counter()
        llm.eval([llm.sample(temp=0.0)])
        return time.perf_counter() - started

    while True:
        # ABBA order: whoever runs second finds the caches warm, so alternate who goes first
        if steps % 2:
            theirs += plain_token()
            plain_tokens += 1
        started = time.perf_counter()
        event = next(events, None)
        ours += time.perf_counter() - started
        ours_tokens = cpu.counters.tokens_sampled - first
        while plain_tokens < ours_tokens:
            theirs += plain_token()
            plain_tokens += 1
        if event is None or event.kind != "token":
            break
        steps += 1
    llm.close()
    cpu.close()
    return ours_tokens / ours, plain_tokens / theirs, ours_tokens


def throughput_medians(repeats: int, model: Path, n_tokens: int, threads: int, **once: Any) -> dict[str, Any]:
    """:func:`throughput_once` ``repeats`` times: medians of the ratio, both rates and the tokens; each ratio."""
    ours, theirs, counts = [], [], []
    for _ in range(repeats):
        a, b, n = throughput_once(model, n_tokens, threads, **once)
        ours.append(a)
        theirs.append(b)
        counts.append(n)
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    return {
        "ratio": round(statistics.median(ratios), 3),
        "ours": round(statistics.median(ours), 1),
        "theirs": round(statistics.median(theirs), 1),
        "tokens": int(statistics.median(counts)),
        "ratios": [round(r, 3) for r in ratios],
    }


def throughput(repeats: int, threads: int) -> dict[str, float]:
    medians = throughput_medians(repeats, STORIES, 200, threads)
    return {
        "throughput_ratio": medians["ratio"],
        "kernel_tokens_per_s": medians["ours"],
        "plain_loop_tokens_per_s": medians["theirs"],
        "throughput_tokens": medians["tokens"],
    }


FORCE = '"{\\"name\\": \\"calculator\\", \\"arguments\\": {\\"expression\\": \\"" [1-9] [0-9] " * " [1-9] "\\"}}"'


def tool_session(model: Path, calls: int, threads: int) -> dict[str, Any]:
    """Ten user turns, each a forced calculator call and a short continuation."""
    from llmos_tools import load_tools

    from llmos.cpu.llama import LlamaCPU
    from llmos.dialects.llmos import LlmosDialect
    from llmos.kernel import Budgets, Kernel

    class Forced(LlmosDialect):
        def forced_call(self, tools, body_rule=None):
            return super().forced_call(tools, body_rule=FORCE)

    cpu = LlamaCPU(model, n_ctx=4096, n_threads=threads)
    kernel = Kernel(cpu, Forced(), load_tools(allow={"calculator"}), budgets=Budgets(max_steps=1, max_step_tokens=60))
    done = 0
    for i in range(calls):
        events = list(kernel.ask(f"Question {i}: what is {i + 12} times 7?", force_call=True))
        done += sum(1 for e in events if e.kind == "result")
    counters = cpu.counters
    transcript = [(t.role, t.text) for t in kernel.turns]
    cpu.close()
    return {
        "calls": done,
        "recompute_ratio": round(counters.recompute_ratio(), 4),
        "reprefilled_tokens": counters.reprefilled_tokens,
        "transcript": transcript,
    }


def naive_session(model: Path, transcript: list[tuple[str, str]], threads: int) -> float:
    """The same conversation driven the common way: re-render the prompt text, create_completion each step."""
    from llama_cpp import Llama

    from llmos.dialects.base import Turn
    from llmos.dialects.llmos import LlmosDialect

    llm = Llama(str(model), n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False)
    evaluated = 0
    original_eval = llm.eval

    def counting_eval(tokens):
        nonlocal evaluated
        evaluated += len(tokens)
        return original_eval(tokens)

    llm.eval = counting_eval  # type: ignore[method-assign]
    dialect, specs = LlmosDialect(), list[dict[str, Any]]()
    turns: list[Turn] = []
    for index, (role, text) in enumerate(transcript):
        if role == "assistant":
            prompt = "".join(s.text for s in dialect.render(turns, specs))
            # the model's step: one completion from the re-rendered prompt (what it wrote is replayed)
            llm.create_completion(prompt, max_tokens=1, temperature=0.0)
            llm.eval(llm.tokenize(text.encode(), add_bos=False, special=True))
        turns.append(Turn(role, text, id=index))  # type: ignore[arg-type]
    final = "".join(s.text for s in dialect.render(turns, specs, generate=False))
    distinct = len(llm.tokenize(final.encode(), special=True))
    llm.close()
    return round(evaluated / distinct, 4)


def startup(repeats: int) -> dict[str, float]:
    llmos = [str(Path(sys.executable).parent / "llmos"), "--help"]
    helps, imports = [], []
    code = "import time; t = time.perf_counter(); import llmos; print(time.perf_counter() - t)"
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(llmos, check=True, capture_output=True)
        helps.append(time.perf_counter() - started)
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
        imports.append(float(out))
    return {"help_seconds": round(statistics.median(helps), 4), "import_seconds": round(statistics.median(imports), 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not STORIES.exists():
        print(f"missing {STORIES}", file=sys.stderr)
        return 1
    from llmos.dialects.llmos import SPECIAL_TOKENS
    from llmos.testing import write_tiny_gguf

    results: dict[str, object] = {}
    results.update(throughput(args.repeats, args.threads))
    with tempfile.TemporaryDirectory() as folder:
        model = write_tiny_gguf(Path(folder) / "llmos-bench.gguf", SPECIAL_TOKENS, n_ctx=4096)
        session = tool_session(model, 10, args.threads)
        results["session_calls"] = session["calls"]
        results["recompute_ratio"] = session["recompute_ratio"]
        results["naive_recompute_ratio"] = naive_session(model, session["transcript"], args.threads)
    results.update(startup(args.repeats))
    results["targets"] = {
        "throughput_ratio": ">= 0.95",
        "recompute_ratio": "1.00",
        "help_seconds": "< 0.3",
        "import_seconds": "< 0.15",
    }
    print(json.dumps(results, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
