"""How much faster llmos-tiny trains with bfloat16 autocast than in float32, side by side.

Two copies of the default-size model (planted induction circuit, the build's shape) take
alternating training steps on the same batches of 8,192 tokens: one in float32, one under
``torch.autocast("cpu", torch.bfloat16)`` as ``python -m llmos_tiny build`` trains by default.
Alternating means a noisy machine slows both alike; the figure is the ratio of median step
times. ``loss_gap`` is the relative difference of the two losses on the first batch (same
weights), so a speed-up bought with a wrong loss shows.

Usage: ``python benchmarks/tiny_train.py [--steps 6] [--threads 2] [--json]``.
Not covered: GPU training, the data pipeline (tokenizing the curriculum), held-out passes.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time


def measure(steps: int) -> dict:
    import torch
    from llmos_tiny.build import SIZES
    from llmos_tiny.circuits import ROPE_THETA, plant_induction
    from llmos_tiny.model import Config, Tiny

    shape, vocab_size, _ = SIZES["default"]
    config = Config(vocab_size=vocab_size, n_ctx=4096, rope_theta=ROPE_THETA, **shape)
    planted = plant_induction(Tiny(config))
    models = {"float32": planted, "bfloat16": copy.deepcopy(planted)}
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}
    generator = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {k: [] for k in models}
    first_loss: dict[str, float] = {}
    for step in range(steps + 1):  # step 0 warms up both
        tokens = torch.randint(0, vocab_size, (4, 2048), generator=generator)
        mask = torch.ones_like(tokens)
        for kind, model in models.items():
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=kind == "bfloat16"):
                loss = model.loss(tokens, mask)
            optimizers[kind].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[kind].step()
            if step:
                times[kind].append(time.perf_counter() - started)
            else:
                first_loss[kind] = loss.item()
    fp32, bf16 = (statistics.median(times[k]) for k in ("float32", "bfloat16"))
    return {
        "float32_step_s": round(fp32, 3),
        "bfloat16_step_s": round(bf16, 3),
        "bf16_speedup": round(fp32 / bf16, 2),
        "loss_gap": round(abs(first_loss["bfloat16"] - first_loss["float32"]) / first_loss["float32"], 4),
        "steps": steps,
        "tokens_per_step": 8192,
        "targets": {"bf16_speedup": ">= 1.2", "loss_gap": "< 0.01"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    report = measure(args.steps)
    if args.json:
        print(json.dumps(report))
        return
    for key, value in report.items():
        print(f"{key:18} {value}")


if __name__ == "__main__":
    main()
