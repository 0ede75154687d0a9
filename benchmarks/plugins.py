"""Plugin benchmark: start-up cost of installed plugins, and the MCP call round trip.

    python benchmarks/plugins.py --json

Figures (medians of interleaved runs, each a fresh process):

* ``startup_ms_with_20_plugins`` / ``startup_ms_without``: a kernel start
  (``load_tools()`` + ``Kernel(...)``, imports included) with 20 extra plugins
  installed and without; ``plugin_startup_ratio`` is with ÷ without (target ≤ 1.2:
  plugins load lazily). Each generated plugin has 3 tools and spends 10 ms importing,
  standing in for a plugin that imports its dependencies at the top of its module.
  The spec cache is warm (one start beforehand), as after any first run.
* ``plugin_startup_ratio_eager``: the same ratio with the cache off (``LLMOS_PLUGIN_CACHE=0``),
  i.e. every plugin, built-in apps included, imported at start: what lazy loading saves.
  ``startup_ms_eager_without`` shows what the built-in apps alone cost eagerly.
* ``tools_cli_ms_with_20_plugins`` / ``tools_cli_ms_without``: ``python -m llmos_shell.cli tools``.
* ``mcp_call_p50_ms``: a trivial tool (``add``) of a stdio MCP server written with the
  ``mcp`` SDK (``tests/mcp_server_example.py``), called through the bridge's sync
  ``Tool.run`` from this thread (background event loop, JSON-RPC over pipes).

The 20 plugins are written to a temporary site directory as a package and its
``.dist-info`` (what pip leaves behind), put on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KERNEL_START = (
    "from llmos_tools import load_tools; from llmos.kernel import Kernel; "
    "from llmos.dialects.llmos import LlmosDialect; from llmos.testing import ScriptedCPU; "
    "Kernel(ScriptedCPU([]), LlmosDialect(), load_tools())"
)
PLUGIN = """
import time

from llmos_tools import Effect, hookimpl, tool

time.sleep(0.01)  # a plugin importing its dependencies


@tool
def {name}_one(text: str) -> str:
    '''First tool of {name}.'''
    return text


@tool(effects={{Effect.NETWORK}})
def {name}_two(url: str, limit: int = 5) -> str:
    '''Second tool of {name}.'''
    return url


@tool(effects={{Effect.WRITES}})
def {name}_three(path: str, lines: list[str]) -> str:
    '''Third tool of {name}.'''
    return path


@hookimpl
def register_tools(register):
    for each in ({name}_one, {name}_two, {name}_three):
        register(each)
"""


def write_plugins(site: Path, count: int) -> None:
    for index in range(count):
        name = f"benchplug{index:02d}"
        (site / f"{name}.py").write_text(textwrap.dedent(PLUGIN.format(name=name)))
        info = site / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[llmos]\n{name} = {name}\n")


def run_ms(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, env=env, check=True, capture_output=True, timeout=120)
    return (time.perf_counter() - started) * 1000


def startup(site: Path, home: Path, rounds: int) -> dict[str, float]:
    base = {**os.environ, "LLMOS_HOME": str(home)}
    setups = {
        "without": {**base, "LLMOS_PLUGIN_CACHE": "1"},
        "with": {**base, "PYTHONPATH": str(site)},
        "eager_without": {**base, "LLMOS_PLUGIN_CACHE": "0"},
        "eager_with": {**base, "PYTHONPATH": str(site), "LLMOS_PLUGIN_CACHE": "0"},
    }
    cli = [sys.executable, "-m", "llmos_shell.cli", "tools"]
    commands = {"kernel": [sys.executable, "-c", KERNEL_START], "cli": cli}
    times: dict[str, list[float]] = {f"{c}_{s}": [] for c in commands for s in setups}
    for env in setups.values():
        run_ms(commands["kernel"], env)  # warm the spec cache and the OS file cache
    for _ in range(rounds):
        for command, args in commands.items():
            for setup, env in setups.items():
                times[f"{command}_{setup}"].append(run_ms(args, env))
    return {key: statistics.median(values) for key, values in times.items()}


def mcp_call_p50_ms(calls: int) -> float:
    from llmos_tools import mcp

    config = mcp.MCPServerConfig("bench", command=sys.executable, args=(str(REPO / "tests" / "mcp_server_example.py"),))
    tools, problems = mcp.connect([config])
    if problems:
        raise RuntimeError("; ".join(problems))
    add = next(t for t in tools if t.name == "bench_add")
    add.run({"a": 1, "b": 2})  # the first call after the handshake
    samples = []
    for index in range(calls):
        started = time.perf_counter()
        result = add.run({"a": index, "b": 1})
        samples.append((time.perf_counter() - started) * 1000)
        assert result.text == str(index + 1), result
    mcp.close_all()
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmos-bench-plugins-") as folder:
        site, home = Path(folder, "site"), Path(folder, "home")
        site.mkdir()
        write_plugins(site, 20)
        os.environ["LLMOS_HOME"] = str(home)
        medians = startup(site, home, args.rounds)
        figures = {
            "startup_ms_with_20_plugins": round(medians["kernel_with"], 1),
            "startup_ms_without": round(medians["kernel_without"], 1),
            "plugin_startup_ratio": round(medians["kernel_with"] / medians["kernel_without"], 3),
            "plugin_startup_ratio_eager": round(medians["kernel_eager_with"] / medians["kernel_eager_without"], 3),
            "startup_ms_eager_without": round(medians["kernel_eager_without"], 1),
            "tools_cli_ms_with_20_plugins": round(medians["cli_with"], 1),
            "tools_cli_ms_without": round(medians["cli_without"], 1),
            "mcp_call_p50_ms": round(mcp_call_p50_ms(args.calls), 2),
        }
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:<32} {value}")


if __name__ == "__main__":
    main()
