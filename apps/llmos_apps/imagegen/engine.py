"""The resource side of imagegen: find a model, load it once, run it, give the memory back.

Contract
--------
* :func:`resolve_model` turns a model name into a local folder holding a diffusers pipeline
  (``model_index.json``): an existing folder is used as is; anything else is a Hugging Face
  Hub id, taken from the local cache, or downloaded with ``imagegen_download`` progress events
  when the machine is online. Offline without the model: a :class:`ToolError` that says how to
  get one. Nothing here downloads while ``HF_HUB_OFFLINE`` is set.
* :class:`Engine` holds at most one pipeline. It loads lazily on the first image, serialises
  images (one accelerator, one job at a time), and unloads after ``idle_s`` seconds without an
  image, or when :meth:`Engine.unload` is called. Unloading drops every reference the engine
  holds, collects garbage and empties the accelerator cache, so the memory really goes back.
* The device is chosen once per load: CUDA, then Apple MPS, then CPU; fp16 on accelerators
  (bf16 for FLUX on CUDA, which overflows in fp16), fp32 on CPU.

Not covered: CPU offload and quantisation for models larger than the device, LoRAs, img2img.
torch and diffusers are imported inside functions, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos_tools import ToolError

HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
DOWNLOAD_POLL_S = 1.0
DTYPES = ("float16", "bfloat16", "float32")
Emit = Callable[[str, Mapping[str, Any]], None]


def offline() -> bool:
    """True when huggingface_hub must not touch the network (read now, not at import)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}:
            return True
    return False


def how_to_get(model: str) -> str:
    return (
        f"download it once while online: `hf download {model}` (or `huggingface-cli download {model}`), "
        f"or point LLMOS_IMAGEGEN_MODEL (setting `imagegen_model`) at a local diffusers folder"
    )


def resolve_model(name: str, emit: Emit) -> Path:
    """The local folder of the pipeline called ``name`` (a folder path or a Hub id)."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ToolError(f"imagegen model folder {path} is not a diffusers pipeline (no model_index.json)")
        return path
    if name.startswith(".") or not HUB_ID.match(name):  # "./x" matches the id pattern but is meant as a path
        raise ToolError(f"imagegen model {name!r} is neither an existing folder nor a Hugging Face Hub id")
    cached = _cached_snapshot(name)
    if cached is not None:
        return cached
    if offline():
        raise ToolError(f"imagegen model {name!r} is not on this machine and the Hub is offline; {how_to_get(name)}")
    return _download(name, emit)


def _cached_snapshot(model: str) -> Path | None:
    from diffusers import DiffusionPipeline

    try:
        return Path(DiffusionPipeline.download(model, local_files_only=True))
    except Exception:  # not cached, or cached incompletely: both mean "download it"
        return None


def _download(model: str, emit: Emit) -> Path:
    """Download on a worker thread; report the bytes on disk from this one (emit stays on the caller's thread)."""
    from diffusers import DiffusionPipeline
    from huggingface_hub import constants

    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["path"] = Path(DiffusionPipeline.download(model))
        except Exception as exc:  # reported below, on the caller's thread
            result["error"] = exc

    repo_folder = Path(constants.HF_HUB_CACHE) / ("models--" + model.replace("/", "--"))
    worker = threading.Thread(target=work, name=f"imagegen-download-{model}", daemon=True)
    worker.start()
    emit("imagegen_download", {"model": model, "bytes": 0, "done": False})
    while worker.is_alive():
        worker.join(DOWNLOAD_POLL_S)
        emit("imagegen_download", {"model": model, "bytes": _folder_bytes(repo_folder), "done": not worker.is_alive()})
    if "error" in result:
        error = result["error"]
        raise ToolError(f"imagegen could not download {model!r}: {type(error).__name__}: {error}") from error
    return result["path"]


def _folder_bytes(folder: Path, limit: int = 10_000) -> int:
    total = 0
    for count, path in enumerate(folder.rglob("*")):
        if count >= limit:
            break
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def choose_device(requested: str = "") -> str:
    """``requested`` if given, else the best device torch can see."""
    import torch

    if requested:
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def choose_dtype(device: str, pipeline_class: str, requested: str = "") -> Any:
    """fp32 on CPU (fp16 is slow or unsupported there); half precision on accelerators."""
    import torch

    if requested:
        if requested not in DTYPES:
            raise ToolError(f"imagegen_dtype {requested!r} is not one of {', '.join(DTYPES)}")
        return getattr(torch, requested)
    if device.startswith("cpu"):
        return torch.float32
    if "Flux" in pipeline_class and device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def pipeline_class_name(folder: Path) -> str:
    try:
        return str(json.loads((folder / "model_index.json").read_text()).get("_class_name", ""))
    except (OSError, ValueError):
        return ""


def load_pipeline(folder: Path, device: str, dtype: Any) -> Any:
    """A text-to-image pipeline from ``folder``, moved to ``device``, with its console progress bar off."""
    from diffusers import AutoPipelineForText2Image, DiffusionPipeline

    with quiet_progress_bars():
        try:
            pipeline = AutoPipelineForText2Image.from_pretrained(folder, dtype=dtype)
        except ValueError:  # a pipeline AutoPipeline does not map (community, custom): load it as declared
            pipeline = DiffusionPipeline.from_pretrained(folder, dtype=dtype)
    pipeline = pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)  # the kernel owns the terminal; progress goes through events
    return pipeline


@contextlib.contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """Silence diffusers' and transformers' loading bars (they would scribble over the TUI), then restore them."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    restore = []
    for library in (diffusers_logging, transformers_logging):
        if library.is_progress_bar_enabled():
            library.disable_progress_bar()
            restore.append(library)
    try:
        yield
    finally:
        for library in restore:
            library.enable_progress_bar()


def native_size(pipeline: Any) -> int:
    """The side length the model was trained at (512 for SD 1.5 and the Turbos, 768 for SD 2.1, 1024 SDXL/FLUX)."""
    scale = int(getattr(pipeline, "vae_scale_factor", 8) or 8)
    unet = getattr(pipeline, "unet", None)
    if unet is not None and isinstance(getattr(unet.config, "sample_size", None), int):
        return unet.config.sample_size * scale
    if isinstance(getattr(pipeline, "default_sample_size", None), int):
        return pipeline.default_sample_size * scale
    return 512


@dataclass
class Loaded:
    """A pipeline in memory and what it was loaded as."""

    model: str
    request: tuple[str, str, str]  # (model, device, dtype) as configured: a change in any means a reload
    pipeline: Any
    device: str
    dtype: str
    load_s: float


class Engine:
    """At most one pipeline in memory, loaded on demand and unloaded when idle."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._loaded: Loaded | None = None
        self._timer: threading.Timer | None = None

    @property
    def loaded(self) -> Loaded | None:
        return self._loaded

    def run(
        self, model: str, job: Callable[[Loaded], Any], *, idle_s: float, device: str = "", dtype: str = "", emit: Emit
    ) -> Any:
        """Call ``job`` with ``model`` loaded (loading it first if needed), then restart the idle clock."""
        with self._lock:
            self._cancel_timer()
            try:
                loaded = self._ensure(model, device, dtype, emit)
                return job(loaded)
            finally:
                self._start_timer(idle_s)

    def _ensure(self, model: str, device: str, dtype: str, emit: Emit) -> Loaded:
        if self._loaded is not None and self._loaded.request == (model, device, dtype):
            return self._loaded
        self.unload()  # configured differently: only one pipeline lives in memory at a time
        folder = resolve_model(model, emit)
        started = time.perf_counter()
        chosen_device = choose_device(device)
        chosen_dtype = choose_dtype(chosen_device, pipeline_class_name(folder), dtype)
        dtype_name = str(chosen_dtype).removeprefix("torch.")
        emit("imagegen_load", {"model": model, "device": chosen_device, "dtype": dtype_name})
        try:
            pipeline = load_pipeline(folder, chosen_device, chosen_dtype)
        except Exception as exc:  # a broken or unsupported folder is a setup problem the user must see
            raise ToolError(f"imagegen could not load {model!r}: {type(exc).__name__}: {exc}") from exc
        load_s = time.perf_counter() - started
        self._loaded = Loaded(model, (model, device, dtype), pipeline, chosen_device, dtype_name, load_s)
        return self._loaded

    def unload(self) -> bool:
        """Free the pipeline's memory now. Returns whether anything was loaded."""
        with self._lock:
            self._cancel_timer()
            loaded, self._loaded = self._loaded, None
            if loaded is None:
                return False
            device = loaded.device
            del loaded  # the engine's last reference; callers must not keep the pipeline
            gc.collect()  # pipelines hold reference cycles (components <-> config), so refcounting alone leaves them
            _empty_device_cache(device)
            return True

    def _start_timer(self, idle_s: float) -> None:
        if self._loaded is None:
            return
        if idle_s <= 0:
            self.unload()
            return
        timer = threading.Timer(idle_s, self._expire)
        timer.daemon = True  # an idle timer must never keep the interpreter alive
        self._timer = timer
        timer.start()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        me = threading.current_thread()
        with self._lock:
            if self._timer is me:  # not superseded by an image that started meanwhile
                self.unload()


def _empty_device_cache(device: str) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.startswith("mps") and torch.backends.mps.is_available():
        torch.mps.empty_cache()


def call_parameters(pipeline: Any) -> set[str]:
    """The keyword arguments ``pipeline(...)`` accepts (pipelines differ: FLUX has no negative prompt, …)."""
    return set(inspect.signature(pipeline.__call__).parameters)
