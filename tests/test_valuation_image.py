"""The illustrated valuation demo (``examples/valuation-illustrated.yaml``) end to end, image included.

A scripted model (:class:`llmos.testing.ScriptedCPU`) does what ``tests/test_valuation.py``'s good model
does (search, open, two calculator calls, one python cell, a summary) and, before the summary, calls
``imagegen``. Everything below the model is real: the runner, the kernel, the browser on the offline
archive, the calculator, the python sandbox and the imagegen app.

* With an image model configured (``LLMOS_IMAGEGEN_MODEL`` pointing at a tiny random diffusers pipeline
  written by :func:`llmos_apps.imagegen.tiny.write_tiny_pipeline`, as ``tests/test_imagegen.py`` does),
  the PNG lands in ``artifacts/`` next to the plot and ``report.html`` inlines both images.
* With none configured (the app falls back to ``stabilityai/sd-turbo``, which this machine does not hold,
  and the Hub is offline), the call is an error result the model reads; the run still answers and passes.

Nothing is downloaded: ``HF_HUB_OFFLINE`` is set for every test here.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import need_module
from llmos_shell import runner
from llmos_shell.task import Task, load_task
from llmos_tools import load_tools
from test_imagegen import tiny_model  # noqa: F401  (a fixture: the tiny random pipeline)
from test_valuation import GOOD_SCRIPT, call, reference

from llmos.dialects.llmos import END, LlmosDialect
from llmos.models import Machine
from llmos.testing import ScriptedCPU

REPO = Path(__file__).resolve().parent.parent
TASK_FILE = REPO / "examples" / "valuation-illustrated.yaml"
SEED = 7
IMAGE = f"imagegen-{SEED}.png"
DRAW = call(
    "imagegen",
    "And an illustration of the growth, next to the plot.",
    prompt="a rocket climbing a steep rising bar chart, flat illustration, blue and orange",
    width=64,
    height=64,
    steps=2,
    seed=SEED,
)
DRAWN_SUMMARY = GOOD_SCRIPT[-1].removesuffix(END) + f" An illustration of the growth is in {IMAGE}." + END
UNDRAWN_SUMMARY = GOOD_SCRIPT[-1].removesuffix(END) + " No illustration: no image model is configured here." + END


@pytest.fixture(autouse=True)
def offline_and_unloaded(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LLMOS_IMAGEGEN_MODEL", raising=False)
    monkeypatch.setenv("LLMOS_IMAGEGEN_IDLE_S", "3600")  # no timer firing mid-test; unloaded below
    yield
    from llmos_apps import imagegen

    imagegen.unload()


def run_illustrated(tmp_path: Path, script: list[str]) -> tuple[runner.RunResult, ScriptedCPU]:
    """The task file through the real runner, on a scripted model; returns the result and the model."""
    need_module("ipykernel")
    cpu = ScriptedCPU(list(script))

    def machine(task: Task) -> Machine:
        return Machine(cpu, LlmosDialect(), "scripted")

    options = runner.RunOptions(
        out=tmp_path / "run", store=tmp_path / "sessions.db", machine_factory=machine, registry=load_tools()
    )
    return runner.run_task(load_task(TASK_FILE), options), cpu


def tool_results(folder: Path) -> list[dict[str, Any]]:
    transcript = json.loads((folder / "transcript.json").read_text())
    return [e["data"] for e in transcript["events"] if e["kind"] == "result"]


def inlined(report: str, path: Path) -> bool:
    return f"data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}" in report


def test_the_task_file_is_the_demo_plus_one_image_request():
    plain, illustrated = load_task(REPO / "examples" / "valuation.yaml"), load_task(TASK_FILE)
    assert illustrated.prompt.startswith(plain.prompt + " ")
    assert "imagegen" in illustrated.prompt[len(plain.prompt) :]
    assert illustrated.tool_names() == [*(plain.tool_names() or []), "imagegen"]
    assert (illustrated.web, illustrated.outputs, illustrated.checks) == (plain.web, plain.outputs, plain.checks)


def test_a_configured_image_model_adds_an_illustration_to_the_run(
    tiny_model: Path,  # noqa: F811  (the imported fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from PIL import Image

    monkeypatch.setenv("LLMOS_IMAGEGEN_MODEL", str(tiny_model))
    result, cpu = run_illustrated(tmp_path, [*GOOD_SCRIPT[:-1], DRAW, DRAWN_SUMMARY])
    folder = result.folder
    assert (result.status, result.exit_code) == ("answer", 0), result.checks
    assert cpu.outputs == [] and IMAGE in result.answer

    results = tool_results(folder)
    assert [r["name"] for r in results] == ["search", "open", "calculator", "calculator", "python", "imagegen"]
    assert not any(r["is_error"] for r in results), results
    assert IMAGE in results[-1]["text"] and f"seed {SEED}" in results[-1]["text"]

    artifacts = folder / "artifacts"
    assert {"valuations.csv", "valuations.png", IMAGE} <= {p.name for p in artifacts.iterdir()}
    with Image.open(artifacts / IMAGE) as image:  # the app's PNG, with its metadata, next to the plot
        assert image.size == (64, 64)
        assert image.info["model"] == str(tiny_model) and image.info["seed"] == str(SEED)

    report = (folder / "report.html").read_text(encoding="utf-8")
    assert inlined(report, artifacts / "valuations.png") and inlined(report, artifacts / IMAGE)
    assert reference.validate_run(folder, "Scale AI") == []


def test_without_an_image_model_the_error_is_read_and_the_run_still_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_module("diffusers")
    from huggingface_hub import constants

    empty_cache = tmp_path / "hf-cache"  # this machine holds no image model, and the Hub is offline
    empty_cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(empty_cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(empty_cache))  # read at import; the app reads it per call
    result, cpu = run_illustrated(tmp_path, [*GOOD_SCRIPT[:-1], DRAW, UNDRAWN_SUMMARY])
    folder = result.folder
    assert (result.status, result.exit_code) == ("answer", 0), result.checks
    assert cpu.outputs == [], "the model went on after the failed call"

    results = tool_results(folder)
    assert [r["name"] for r in results] == ["search", "open", "calculator", "calculator", "python", "imagegen"]
    assert not any(r["is_error"] for r in results[:-1]), results
    error = results[-1]
    assert error["is_error"] and "stabilityai/sd-turbo" in error["text"] and "LLMOS_IMAGEGEN_MODEL" in error["text"]
    read = [segment.text for load in cpu.loads for segment in load]
    assert any(error["text"] in text for text in read), "the error result went into the model's context"

    assert not list((folder / "artifacts").glob("imagegen-*.png"))
    report = (folder / "report.html").read_text(encoding="utf-8")
    assert inlined(report, folder / "artifacts" / "valuations.png")
    assert reference.validate_run(folder, "Scale AI") == []
