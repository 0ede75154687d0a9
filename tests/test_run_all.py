"""``benchmarks/run_all.py`` on a folder of fake benchmarks: one good, one failing, one too slow."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

RUN_ALL = Path(__file__).resolve().parent.parent / "benchmarks" / "run_all.py"
spec = importlib.util.spec_from_file_location("run_all", RUN_ALL)
assert spec and spec.loader
run_all = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_all)

FAKES = {
    "kernel.py": """
        import json, sys
        assert sys.argv[1:] == ["--json"]
        print("a stray line first")
        print(json.dumps({"throughput_ratio": 0.97, "recompute_ratio": 1.004, "help_seconds": 0.5,
                          "nested": {"extra": 3}, "targets": {"extra": ">= 2"}}))
    """,
    "broken.py": """
        import sys
        print("about to fail", file=sys.stderr)
        raise SystemExit("boom: no model")
    """,
    "slow.py": """
        import time
        time.sleep(60)
    """,
}


@pytest.fixture()
def fakes(tmp_path: Path) -> Path:
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    for name, code in FAKES.items():
        (folder / name).write_text(textwrap.dedent(code))
    return folder


def run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(RUN_ALL), "--json", "--folder", str(folder), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_runs_every_script_and_reports_figures_targets_and_errors(fakes):
    done = run(fakes, "--timeout", "2")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == {"date", "machine", "benchmarks", "summary"}
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["platform"]
    assert set(report["benchmarks"]) == {"kernel", "broken", "slow"}
    kernel = report["benchmarks"]["kernel"]
    assert kernel["error"] is None and kernel["figures"]["throughput_ratio"] == 0.97
    targets = kernel["targets"]
    assert targets["throughput_ratio"] == {"target": ">= 0.95", "value": 0.97, "met": True}  # from the table
    assert targets["recompute_ratio"]["met"] is True  # "1.00" at two places
    assert targets["help_seconds"]["met"] is False
    assert targets["import_seconds"] == {"target": "< 0.15", "value": None, "met": None}  # absent
    assert targets["extra"] == {"target": ">= 2", "value": 3, "met": True}  # the script's own, nested figure
    broken = report["benchmarks"]["broken"]
    assert "exit status 1" in broken["error"] and "boom: no model" in broken["error"] and broken["figures"] == {}
    assert "timed out after 2 s" in report["benchmarks"]["slow"]["error"]
    assert report["summary"] == {"met": 3, "missed": 1, "missing": 1, "errors": ["broken", "slow"]}


def test_only_and_skip_choose_benchmarks(fakes):
    report = json.loads(run(fakes, "--only", "kernel", "--only", "broken", "--skip", "broken").stdout)
    assert list(report["benchmarks"]) == ["kernel"]
    assert run(fakes, "--only", "nothing").returncode == 2


def test_target_specs():
    assert run_all.meets(0, "0") and not run_all.meets(0.01, "0")
    assert run_all.meets(1.2, "<= 1.2") and not run_all.meets(1.2, "< 1.2")
    assert run_all.meets(None, ">= 1") is None and run_all.meets(True, ">= 1") is None
    assert run_all.lookup({"total": {"asr": 0.0}, "suites": {"x": {"n": 1}}}, "asr") == 0.0
    assert run_all.lookup({"a": {"n": 1}, "b": {"n": 2}}, "n") is None  # ambiguous
    assert set(run_all.TARGETS) <= {p.stem for p in RUN_ALL.parent.glob("*.py")}  # every table entry is a script
