"""Benchmark the sandbox against its baselines, run side by side in the same process.

    python benchmarks/sandbox.py --json

Figures: ``warm_roundtrip_p50_ms`` (a trivial cell on a warm kernel through the
sandbox API, limits, isolation and capture on; target < 8), ``cold_start_s``,
``pool_start_ms`` (a session served from the warm pool until its first cell has
answered; target < 50), ``plot_capture_ms`` (a matplotlib plot through the python app,
saved as PNG and attached), ``vs_raw_jupyter_ratio`` (sandbox ÷ bare jupyter-client
``execute_interactive`` on an unconfined kernel, measured interleaved; target ≤ 1.1)
``vs_subprocess_ratio`` (sandbox ÷ a fresh ``python -c`` per call; target < 0.5) and
``confined_roundtrip_ratio`` (a trivial cell with every layer the host gives: reads
confined, nobody, seccomp, quota ÷ the same sandbox without those four layers, as
before they existed; measured interleaved; target ≤ 1.1).
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
from dataclasses import replace
from pathlib import Path

from jupyter_client.manager import KernelManager
from llmos_sandbox import Sandbox, SandboxConfig, SandboxPool, probe

CELL = "1 + 1"


def timed_ms(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def sandbox_vs_raw(rounds: int) -> tuple[float, float, float]:
    """(cold start s, sandbox p50 ms, raw jupyter p50 ms), the two cells interleaved."""
    started = time.perf_counter()
    box = Sandbox(SandboxConfig())
    cold = time.perf_counter() - started
    manager = KernelManager()
    manager.start_kernel()
    client = manager.blocking_client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    try:
        ours, raw = [], []
        for index in range(rounds + 20):
            mine = timed_ms(lambda: box.run(CELL))
            theirs = timed_ms(lambda: client.execute_interactive(CELL, output_hook=lambda message: None, timeout=30))
            if index >= 20:  # the first cells warm both kernels up
                ours.append(mine)
                raw.append(theirs)
        return cold, statistics.median(ours), statistics.median(raw)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        box.close()


def confined_vs_before(rounds: int) -> tuple[float, float]:
    """(p50 ms with every layer, p50 ms without reads/user/seccomp/quota), interleaved."""
    host = probe()
    before = replace(host, reads=False, user=False, seccomp=False, quota=False)
    with Sandbox(SandboxConfig(), host) as confined, Sandbox(SandboxConfig(), before) as legacy:
        ours, theirs = [], []
        for index in range(rounds + 20):
            mine = timed_ms(lambda: confined.run(CELL))
            old = timed_ms(lambda: legacy.run(CELL))
            if index >= 20:
                ours.append(mine)
                theirs.append(old)
    return statistics.median(ours), statistics.median(theirs)


def subprocess_p50(rounds: int) -> float:
    return statistics.median(
        timed_ms(lambda: subprocess.run([sys.executable, "-c", CELL], check=True)) for _ in range(rounds)
    )


def pool_start_ms(rounds: int) -> float:
    times = []
    with SandboxPool(SandboxConfig(), size=1) as pool:
        for index in range(rounds):
            pool.wait_ready(120)
            session = f"bench-{index}"

            def first_cell(session: str = session) -> object:
                return pool.for_session(session).run(CELL)

            times.append(timed_ms(first_cell))
            pool.end_session(session)
    return statistics.median(times)


def plot_capture_ms(rounds: int) -> float:
    from llmos_apps import python_tool
    from llmos_tools import ToolContext

    tool = python_tool.build_tool()
    with tempfile.TemporaryDirectory() as folder:
        context = ToolContext(session_id="bench", workdir=Path(folder))
        tool.run({"code": "1"}, context)  # start the session (numpy, pandas, matplotlib preloaded)
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            result = tool.run({"code": "plt.plot([1, 2, 3], [1, 4, 9])"}, context)
            times.append((time.perf_counter() - started) * 1000)
            assert result.artifacts, result.text
    python_tool.shutdown()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rounds", type=int, default=200, help="trivial cells per side")
    args = parser.parse_args()
    level = probe()
    cold, ours, raw = sandbox_vs_raw(args.rounds)
    spawn = subprocess_p50(max(5, args.rounds // 10))
    confined, before = confined_vs_before(args.rounds)
    figures = {
        "warm_roundtrip_p50_ms": round(ours, 3),
        "raw_jupyter_p50_ms": round(raw, 3),
        "subprocess_p50_ms": round(spawn, 3),
        "cold_start_s": round(cold, 3),
        "pool_start_ms": round(pool_start_ms(5), 3),
        "plot_capture_ms": round(plot_capture_ms(10), 3),
        "vs_raw_jupyter_ratio": round(ours / raw, 3),
        "vs_subprocess_ratio": round(ours / spawn, 3),
        "confined_p50_ms": round(confined, 3),
        "before_confinement_p50_ms": round(before, 3),
        "confined_roundtrip_ratio": round(confined / before, 3),
        "isolation": level.level,
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:24} {value}")


if __name__ == "__main__":
    main()
