"""The imagegen app on a real (tiny, random) diffusers pipeline, loaded the way users load theirs.

The pipeline is built from configs and saved with ``save_pretrained``; every test that makes
an image goes through the tool with ``imagegen_model`` pointing at that folder. Nothing is
downloaded: ``HF_HUB_OFFLINE`` is set for the whole module.
"""

from __future__ import annotations

import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
from helpers import need_module
from llmos_apps import imagegen
from llmos_tools import ToolContext, ToolError, load_tools

IDLE_NEVER = 3600  # tests unload explicitly; a timer firing mid-test would only add noise


@pytest.fixture(autouse=True)
def offline_and_unloaded(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LLMOS_IMAGEGEN_MODEL", raising=False)
    yield
    imagegen.unload()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for module in ("torch", "diffusers", "transformers"):
        need_module(module)
    import torch

    torch.set_num_threads(1)  # the suite shares two cores
    from llmos_apps.imagegen.tiny import write_tiny_pipeline

    return write_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd")


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, data: Any) -> None:
        self.events.append((kind, dict(data)))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for k, data in self.events if k == kind]


def context_for(model: Path | str, workdir: Path, **settings: Any) -> ToolContext:
    settings = {"imagegen_model": str(model), "imagegen_idle_s": IDLE_NEVER, **settings}
    return ToolContext(session_id="t", workdir=workdir, settings=settings, emit=Recorder())


def make(context: ToolContext, **arguments: Any) -> Any:
    return imagegen.imagegen_tool.run({"prompt": "a red cube on a table", **arguments}, context)


def pixels(path: Path) -> bytes:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB").tobytes()


def test_image_has_requested_size_metadata_and_artifact(tiny_model: Path, tmp_path: Path) -> None:
    from PIL import Image

    result = make(context_for(tiny_model, tmp_path / "work"), width=72, height=64, steps=2, seed=11)
    (artifact,) = result.artifacts
    assert artifact.path.parent == tmp_path / "work" and artifact.mime == "image/png"
    assert artifact.path.name in result.text and "seed 11" in result.text and not result.is_error
    with Image.open(artifact.path) as image:
        assert image.size == (72, 64)
        assert image.info["prompt"] == "a red cube on a table"
        assert image.info["seed"] == "11"
        assert image.info["model"] == str(tiny_model)
        assert image.info["steps"] == "2"


def test_same_seed_gives_identical_pixels(tiny_model: Path, tmp_path: Path) -> None:
    context = context_for(tiny_model, tmp_path)
    first = make(context, width=64, height=64, steps=2, seed=5).artifacts[0].path
    again = make(context, width=64, height=64, steps=2, seed=5).artifacts[0].path
    other = make(context, width=64, height=64, steps=2, seed=6).artifacts[0].path
    assert first != again, "a second image with the same seed must not overwrite the first"
    assert pixels(first) == pixels(again)
    assert pixels(first) != pixels(other)


def test_one_progress_event_per_step(tiny_model: Path, tmp_path: Path) -> None:
    context = context_for(tiny_model, tmp_path)
    make(context, width=64, height=64, steps=3, seed=1)
    recorder = context.emit
    assert isinstance(recorder, Recorder)
    assert recorder.of("imagegen_step") == [{"step": i, "steps": 3} for i in (1, 2, 3)]
    assert [e["device"] for e in recorder.of("imagegen_load")] == ["cpu"]
    assert len(recorder.of("artifact")) == 1


def test_defaults_come_from_the_model(tiny_model: Path, tmp_path: Path) -> None:
    result = make(context_for(tiny_model, tmp_path), steps=1)
    # the tiny model's native side is 32 pixels; the app clamps it to its 64-pixel minimum
    assert (result.data["width"], result.data["height"]) == (64, 64)
    assert 0 <= result.data["seed"] < 2**32, "an unset seed is drawn and reported"
    assert imagegen.default_steps("stabilityai/sd-turbo") == (1, 0.0)
    assert imagegen.default_steps("black-forest-labs/FLUX.1-schnell") == (4, 0.0)
    assert imagegen.default_steps("runwayml/stable-diffusion-v1-5") == (25, None)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"width": 2048}, "width 2048 is not allowed: use a multiple of 8 from 64 to 1024"),
        ({"height": 100}, "height 100 is not allowed"),
        ({"width": 32}, "width 32 is not allowed"),
        ({"steps": 51}, "steps 51 is not allowed: use 1 to 50"),
        ({"steps": 0}, "steps 0 is not allowed"),
        ({"seed": -1}, "seed -1 is not allowed"),
        ({"prompt": "  "}, "prompt is empty"),
        ({"prompt": "x" * 2001}, "the limit is 2,000"),
        ({"width": "big"}, "width must be integer"),
    ],
)
def test_bad_requests_get_clear_errors_before_loading(tmp_path: Path, arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ToolError, match=message):
        make(context_for("/nowhere/no-model", tmp_path), **arguments)
    assert imagegen.ENGINE.loaded is None
    assert not list(tmp_path.iterdir())


def test_offline_without_the_model_says_how_to_get_it(tmp_path: Path) -> None:
    need_module("diffusers")
    with pytest.raises(ToolError) as caught:
        make(context_for("llmos-test/no-such-model", tmp_path), width=64, height=64, steps=1)
    message = str(caught.value)
    assert "not on this machine and the Hub is offline" in message
    assert "hf download llmos-test/no-such-model" in message and "LLMOS_IMAGEGEN_MODEL" in message


def test_online_download_reports_progress(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hub path, with huggingface_hub's downloader replaced: this machine has no network, and tests never fetch."""
    from diffusers import DiffusionPipeline
    from llmos_apps.imagegen import engine

    fetched: list[str] = []

    def fake_download(model: str, local_files_only: bool = False, **options: Any) -> str:
        if local_files_only:
            raise OSError(f"{model} is not in the cache")
        time.sleep(0.3)
        fetched.append(model)
        return str(tiny_model)

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(DiffusionPipeline, "download", fake_download)
    monkeypatch.setattr(engine, "DOWNLOAD_POLL_S", 0.05)
    context = context_for("someone/tiny-sd", tmp_path)
    result = make(context, width=64, height=64, steps=1, seed=0)
    assert fetched == ["someone/tiny-sd"] and result.data["model"] == "someone/tiny-sd"
    assert isinstance(context.emit, Recorder)
    progress = context.emit.of("imagegen_download")
    assert len(progress) >= 3 and progress[-1]["done"] is True and not progress[0]["done"]


def test_model_setting_falls_back_to_the_environment(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMOS_IMAGEGEN_MODEL", str(tiny_model))
    context = ToolContext(workdir=tmp_path, settings={"imagegen_idle_s": IDLE_NEVER})
    assert make(context, width=64, height=64, steps=1, seed=0).data["model"] == str(tiny_model)


def test_bad_model_locations_are_explained(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="neither an existing folder nor a Hugging Face Hub id"):
        make(context_for(tmp_path / "missing", tmp_path), steps=1)
    with pytest.raises(ToolError, match="not a diffusers pipeline"):
        make(context_for(tmp_path, tmp_path), steps=1)


def test_unload_frees_the_pipeline_and_its_tensors(tiny_model: Path, tmp_path: Path) -> None:
    make(context_for(tiny_model, tmp_path), width=64, height=64, steps=1, seed=0)
    loaded = imagegen.ENGINE.loaded
    assert loaded is not None
    pipeline = weakref.ref(loaded.pipeline)
    tensors = [weakref.ref(p) for p in loaded.pipeline.unet.parameters()]
    tensors += [weakref.ref(p) for p in loaded.pipeline.text_encoder.parameters()]
    del loaded
    assert imagegen.unload() is True
    assert imagegen.ENGINE.loaded is None and pipeline() is None
    assert sum(ref() is not None for ref in tensors) == 0, "weights survived the unload"
    assert imagegen.unload() is False, "a second unload has nothing to free"


def test_idle_pipeline_is_unloaded_by_its_timer(tiny_model: Path, tmp_path: Path) -> None:
    make(context_for(tiny_model, tmp_path, imagegen_idle_s=0.2), width=64, height=64, steps=1, seed=0)
    deadline = time.monotonic() + 10
    while imagegen.ENGINE.loaded is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert imagegen.ENGINE.loaded is None


def test_plugin_registers_a_read_only_tool_and_imports_no_torch() -> None:
    registry = load_tools(extra_plugins=[imagegen], allow=set())
    assert "imagegen" in registry and registry["imagegen"].effects == frozenset()
    assert set(registry["imagegen"].parameters["properties"]) == {"prompt", "width", "height", "steps", "seed"}
    code = "import sys, llmos_apps.imagegen; print(sorted({'torch', 'diffusers'} & set(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert output.stdout.strip() == "[]"


def test_bad_dtype_setting_is_explained(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="imagegen_dtype 'half' is not one of float16, bfloat16, float32"):
        make(context_for(tiny_model, tmp_path, imagegen_dtype="half"), steps=1)
