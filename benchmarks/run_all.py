"""Run every benchmark and report its figures against the project's targets, as one JSON object.

    python benchmarks/run_all.py --json                    # every other benchmarks/*.py
    python benchmarks/run_all.py --only kernel --only sandbox --timeout 600
    python benchmarks/run_all.py --skip agentdojo_eval --skip memory

Contract
--------
* Each other ``*.py`` script in the folder (``--folder``, default this one; names starting
  with ``_`` are skipped) runs as ``python SCRIPT --json`` in its own subprocess and process
  group, from the repository root, with a per-script timeout (default 15 minutes), one at a time.
  Its stdout must hold one JSON object (the whole output, or its last ``{…}`` line).
* A script that fails, times out or prints no JSON is reported with ``error`` (exit status,
  the tail of its stderr); the others still run. The exit code is 0 unless nothing matched
  ``--only``/``--skip`` (2).
* Targets: a script's own ``targets`` key (figure -> ``">= 0.95"``, ``"< 0.3"``, ``"1.00"``) wins
  over :data:`TARGETS` (copied from the issues) figure by figure. A figure name matches the
  script's key exactly or as the last part of a nested key (``total.asr``). ``met`` is true or
  false, or null when the figure is absent; a bare number means equality, at its precision when
  it has decimals (``"1.00"``: 1.004 meets it, 1.01 does not; ``"0"``: only 0 does).

Output::

    {"date": ISO time, "machine": {"platform", "python", "cpu_count"},
     "benchmarks": {name: {"figures": {...}, "seconds", "error",
                           "targets": {figure: {"target", "value", "met"}}}},
     "summary": {"met", "missed", "missing", "errors": [names]}}

Not covered: running benchmarks in parallel (they measure speed), extra arguments per script.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_TIMEOUT = 15 * 60.0
STDERR_TAIL = 2_000

# From the issues; a script's own "targets" key overrides these figure by figure.
TARGETS: dict[str, dict[str, str]] = {
    "kernel": {"throughput_ratio": ">= 0.95", "recompute_ratio": "1.00", "help_seconds": "< 0.3",
               "import_seconds": "< 0.15"},
    "memory": {"pageout_speedup": ">= 10", "paged_recompute_ratio": "<= 1.2", "recall_p50_ms": "< 20"},
    "sandbox": {"warm_roundtrip_p50_ms": "< 8", "pool_start_ms": "< 50", "vs_raw_jupyter_ratio": "<= 1.1",
                "vs_subprocess_ratio": "< 0.5"},
    "browser": {"static_open_p50_ms": "< 80", "js_open_p50_ms": "< 400"},
    "imagegen": {"overhead_ratio": "<= 1.05"},
    "plugins": {"plugin_startup_ratio": "<= 1.2"},
    "tiny_eval": {"call_valid": ">= 0.99", "right_tool": ">= 0.95", "args_right": ">= 0.90", "answer_right": ">= 0.90",
                  "valuation_success": ">= 0.80"},
    "agentdojo_eval": {"asr": "0", "utility_ratio": ">= 0.95"},
    "real_model": {"throughput_ratio": ">= 0.97", "recompute_ratio": "1.00", "ttft_after_tool_ratio": "<= 0.1",
                   "pageout_speedup": ">= 30"},
}  # fmt: skip
SPEC = re.compile(r"\s*(>=|<=|==|>|<)?\s*(-?\d+(?:\.\d+)?)\s*")


def discover(folder: Path, only: list[str], skip: list[str]) -> list[Path]:
    """The benchmark scripts to run, by name (file stem), this runner excluded."""
    this = Path(__file__).resolve()
    scripts = [p for p in sorted(folder.glob("*.py")) if p.resolve() != this and not p.name.startswith("_")]
    return [p for p in scripts if (not only or p.stem in only) and p.stem not in skip]


def run_script(script: Path, timeout: float) -> dict[str, Any]:
    """Run one script with ``--json``; its figures, or an error. Never raises for the script's faults."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, str(script), "--json"],
        cwd=script.parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a timeout ends the children it started too
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        return _entry({}, started, f"timed out after {timeout:g} s; stderr: {_tail(stderr)}")
    if process.returncode != 0:
        return _entry({}, started, f"exit status {process.returncode}; stderr: {_tail(stderr)}")
    figures = parse_output(stdout)
    if figures is None:
        return _entry({}, started, f"no JSON object on stdout: {_tail(stdout)}")
    return _entry(figures, started, None)


def _entry(figures: dict[str, Any], started: float, error: str | None) -> dict[str, Any]:
    return {"figures": figures, "seconds": round(time.monotonic() - started, 1), "error": error}


def _tail(text: str | None) -> str:
    text = (text or "").strip()
    return text if len(text) <= STDERR_TAIL else "…" + text[-STDERR_TAIL:]


def parse_output(stdout: str) -> dict[str, Any] | None:
    """The script's JSON object: the whole stdout, or else its last line that is one."""
    candidates = [stdout] + [line for line in reversed(stdout.splitlines()) if line.lstrip().startswith("{")]
    for text in candidates:
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested figures as dotted keys: {"total": {"asr": 0}} -> {"total.asr": 0}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def lookup(figures: dict[str, Any], name: str) -> Any:
    """A figure by exact key, else the one nested key ending in ``.name`` (None if absent or ambiguous)."""
    flat = flatten({k: v for k, v in figures.items() if k != "targets"})
    if name in flat:
        return flat[name]
    found = [v for k, v in flat.items() if k.endswith("." + name)]
    return found[0] if len(found) == 1 else None


def meets(value: Any, spec: str) -> bool | None:
    """Whether a number meets a target like ``">= 0.95"`` or ``"1.00"``; None if not comparable."""
    match = SPEC.fullmatch(str(spec))
    if match is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    op, number = match.group(1) or "==", match.group(2)
    target = float(number)
    if op == "==":
        places = len(number.partition(".")[2])
        return (round(value, places) if places else value) == target
    return {">=": value >= target, "<=": value <= target, ">": value > target, "<": value < target}[op]


def targets_for(name: str, figures: dict[str, Any]) -> dict[str, dict[str, Any]]:
    own = figures.get("targets")
    specs = {**TARGETS.get(name, {}), **(own if isinstance(own, dict) else {})}
    result = {}
    for figure, spec in specs.items():
        value = lookup(figures, figure)
        result[figure] = {"target": spec, "value": value, "met": meets(value, spec)}
    return result


def run_all(folder: Path, only: list[str], skip: list[str], timeout: float, log: Any = None) -> dict[str, Any]:
    benchmarks: dict[str, Any] = {}
    for script in discover(folder, only, skip):
        if log:
            log(f"running {script.name} (timeout {timeout:g} s)")
        entry = run_script(script, timeout)
        entry["targets"] = targets_for(script.stem, entry["figures"])
        benchmarks[script.stem] = entry
        if log:
            log(f"  {script.stem}: {entry['error'] or 'ok'} ({entry['seconds']} s)")
    checked = [t["met"] for entry in benchmarks.values() for t in entry["targets"].values()]
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count()},
        "benchmarks": benchmarks,
        "summary": {
            "met": checked.count(True),
            "missed": checked.count(False),
            "missing": checked.count(None),
            "errors": [name for name, entry in benchmarks.items() if entry["error"]],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object and nothing else on stdout")
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="run only this benchmark")
    parser.add_argument("--skip", action="append", default=[], metavar="NAME", help="do not run this benchmark")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per benchmark (900)")
    parser.add_argument("--folder", type=Path, default=HERE, help="where the benchmark scripts are")
    args = parser.parse_args(argv)
    if not discover(args.folder, args.only, args.skip):
        print(f"no benchmark in {args.folder} matches --only/--skip", file=sys.stderr)
        return 2
    report = run_all(args.folder, args.only, args.skip, args.timeout, log=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(report))
        return 0
    for name, entry in report["benchmarks"].items():
        error = entry["error"] and entry["error"].strip().splitlines()[-1]  # the full text is in --json
        print(f"{name}: {error or 'ok'} ({entry['seconds']} s)")
        for figure, target in entry["targets"].items():
            mark = {True: "met", False: "MISSED", None: "missing"}[target["met"]]
            print(f"  {figure:>24}: {target['value']!s:>10}  target {target['target']:<8} {mark}")
    print(json.dumps(report["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
