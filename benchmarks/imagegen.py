"""Benchmark the imagegen app on the tiny random pipeline: load time, step rate, and the app's overhead.

    python benchmarks/imagegen.py --json            # prints one JSON object
    python benchmarks/imagegen.py --rounds 15       # more rounds for a steadier overhead figure

* ``load_s``: from "nothing loaded" to a pipeline ready on the device, through the app
  (resolve the folder, ``from_pretrained``, move to the device); median of ``--loads``.
  ``import_s`` is the one-time import of torch/diffusers/transformers, reported apart.
* ``steps_per_s_64`` / ``steps_per_s_256``: denoising steps per second at 64×64 and 256×256,
  timed between the first and last ``imagegen_step`` events of one image (so the text encoder
  and the VAE decode are left out); median over ``--images`` images.
* ``overhead_ratio``: the app's wall time for one image (validation, PNG with metadata written
  to disk, events) ÷ the same pipeline object called directly with the same arguments and seed.
  The two alternate (and swap order each round), so drift in machine load hits both; the
  figure is the median of the ``--rounds`` per-pair ratios.

Nothing is downloaded (``HF_HUB_OFFLINE=1``). Nothing here asserts a speed: the numbers are
reported, not tested. Run it on a quiet machine; torch uses ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmos_apps import imagegen
from llmos_tools import ToolContext

PROMPT = "a lighthouse on a cliff at dusk"


def context_for(model: Path, workdir: Path, emit: Callable[[str, Any], None] = lambda kind, data: None) -> ToolContext:
    return ToolContext(workdir=workdir, settings={"imagegen_model": str(model), "imagegen_idle_s": 3600}, emit=emit)


def measure_load(args: argparse.Namespace, model: Path, workdir: Path) -> dict[str, Any]:
    times = []
    for _ in range(args.loads):
        imagegen.unload()
        started = time.perf_counter()
        imagegen.ENGINE.run(str(model), lambda loaded: None, idle_s=3600, emit=lambda kind, data: None)
        times.append(time.perf_counter() - started)
    return {"load_s": round(statistics.median(times), 4)}


def steps_per_second(model: Path, workdir: Path, side: int, steps: int) -> float:
    stamps: list[float] = []

    def emit(kind: str, data: Any) -> None:
        if kind == "imagegen_step":
            stamps.append(time.perf_counter())

    imagegen.imagegen_tool.run(
        {"prompt": PROMPT, "width": side, "height": side, "steps": steps, "seed": 1}, context_for(model, workdir, emit)
    )
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def measure_steps(args: argparse.Namespace, model: Path, workdir: Path) -> dict[str, Any]:
    found = {}
    for side in (64, 256):
        rates = [steps_per_second(model, workdir, side, args.steps) for _ in range(args.images)]
        found[f"steps_per_s_{side}"] = round(statistics.median(rates), 2)
    return found


def measure_overhead(args: argparse.Namespace, model: Path, workdir: Path) -> dict[str, Any]:
    import torch

    arguments = {"prompt": PROMPT, "width": 64, "height": 64, "steps": args.steps, "seed": 3}
    context = context_for(model, workdir)
    imagegen.imagegen_tool.run(arguments, context)  # warm: loaded, caches filled
    loaded = imagegen.ENGINE.loaded
    assert loaded is not None
    pipeline = loaded.pipeline

    def app() -> None:
        imagegen.imagegen_tool.run(arguments, context)

    def direct() -> None:
        generator = torch.Generator("cpu").manual_seed(3)
        pipeline(prompt=PROMPT, width=64, height=64, num_inference_steps=args.steps, generator=generator)

    direct()
    app_times: list[float] = []
    direct_times: list[float] = []
    for number in range(args.rounds):
        order = [("app", app), ("direct", direct)]
        for name, run in order if number % 2 == 0 else reversed(order):  # alternate who goes first
            started = time.perf_counter()
            run()
            (app_times if name == "app" else direct_times).append(time.perf_counter() - started)
    ratios = [a / d for a, d in zip(app_times, direct_times, strict=True)]
    return {
        "overhead_ratio": round(statistics.median(ratios), 3),  # per pair, so slow drift in load cancels
        "app_image_s": round(statistics.median(app_times), 4),
        "direct_image_s": round(statistics.median(direct_times), 4),
    }


MEASUREMENTS: list[Callable[[argparse.Namespace, Path, Path], dict[str, Any]]] = [
    measure_load,
    measure_steps,
    measure_overhead,
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per image (default 4)")
    parser.add_argument("--rounds", type=int, default=15, help="app/direct pairs for the overhead (default 15)")
    parser.add_argument("--images", type=int, default=2, help="images per size for steps_per_s (default 2)")
    parser.add_argument("--loads", type=int, default=3, help="loads timed for load_s (default 3)")
    args = parser.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: it reads this once

    started = time.perf_counter()
    import torch
    from llmos_apps.imagegen.tiny import write_tiny_pipeline

    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"import_s": round(time.perf_counter() - started, 3)}
    results |= {"model": "tiny random StableDiffusionPipeline", "threads": args.threads, "steps": args.steps}
    with tempfile.TemporaryDirectory(prefix="llmos-imagegen-bench-") as scratch:
        model = write_tiny_pipeline(Path(scratch) / "tiny-sd")
        workdir = Path(scratch) / "work"
        for measurement in MEASUREMENTS:
            found = measurement(args, model, workdir)
            results |= found
            if not args.json:
                print(", ".join(f"{key} {value}" for key, value in found.items()), file=sys.stderr)
        results["device"] = imagegen.ENGINE.loaded.device if imagegen.ENGINE.loaded else "?"
        imagegen.unload()
    print(json.dumps(results) if args.json else json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
