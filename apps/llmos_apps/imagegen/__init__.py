"""The ``imagegen`` app: text to image with any local diffusers pipeline.

Contract
--------
* Tool ``imagegen(prompt, width, height, steps, seed)``. Unset sizes and steps take the
  model's defaults (its training resolution; 1 step for *-turbo, 4 for FLUX-schnell, 25
  otherwise); an unset seed is drawn at random and reported, so every image can be made again:
  the same model, arguments and seed on the same device give the same pixels.
* The PNG is written into ``ToolContext.workdir`` under a new name (``imagegen-<seed>.png``,
  never overwriting), carries ``prompt``, ``seed``, ``model``, ``steps`` and size as PNG text
  chunks, and comes back as an :class:`Artifact`; the text the model reads names the file.
* Progress: ``imagegen_step`` ``{"step": i, "steps": n}`` once per denoising step (``i`` from
  1 to ``n``), ``imagegen_load`` when a model loads, ``imagegen_download`` while one downloads,
  ``artifact`` when the file is written.
* Limits, checked before anything loads: each side 64..1024 and a multiple of 8, steps 1..50,
  prompt at most 2,000 characters; breaking one is a :class:`ToolError` that says the limit.
* Resources (see :mod:`llmos_apps.imagegen.engine`): the pipeline loads on first use, stays
  for ``imagegen_idle_s`` seconds after the last image (default 300; 0 unloads after every
  image), and :func:`unload` frees it on request.

Settings (``ToolContext.settings``, else the environment): ``imagegen_model`` /
``LLMOS_IMAGEGEN_MODEL`` (a diffusers folder or Hub id, default ``stabilityai/sd-turbo``),
``imagegen_idle_s`` / ``LLMOS_IMAGEGEN_IDLE_S``, ``imagegen_device`` / ``LLMOS_IMAGEGEN_DEVICE``
(``cuda``, ``mps``, ``cpu``; default: the best available), ``imagegen_dtype`` (``float16``,
``bfloat16``, ``float32``), ``imagegen_guidance`` (overrides the guidance scale).

Effects: none declared (read-only), by this reasoning. The only file written is a new PNG
in the session's own workdir, which is the tool's scratch space (``Effect.WRITES`` is for
changes outside it); nothing existing is overwritten. The only network traffic is the
one-time download of the model the *user* configured; no argument ever leaves the machine,
so an untrusted prompt cannot leak through this tool. The prompt is an ordinary argument, so
the policy sees it and its provenance like any other.

Not covered: negative prompts, img2img and inpainting, batches, cancelling a running image,
CPU offload for models larger than the device (a model that does not fit fails to load).
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

from llmos_tools import Artifact, ToolContext, ToolError, ToolResult, hookimpl, tool

from llmos_apps.imagegen.engine import Engine, Loaded, call_parameters, native_size

DEFAULT_MODEL = "stabilityai/sd-turbo"
DEFAULT_IDLE_S = 300.0
MIN_SIDE, MAX_SIDE, SIDE_MULTIPLE = 64, 1024, 8
MAX_STEPS = 50
MAX_PROMPT_CHARS = 2_000
MAX_SEED = 2**53  # JSON-safe, and far more than anyone will type

ENGINE = Engine()


def unload() -> bool:
    """Free the loaded pipeline now (memory and accelerator cache). Returns whether one was loaded."""
    return ENGINE.unload()


def setting(context: ToolContext, key: str, default: Any = None) -> Any:
    """``context.settings[key]``, else env ``LLMOS_<KEY>``, else ``default``."""
    value = context.settings.get(key)
    if value is None or value == "":
        value = os.environ.get("LLMOS_" + key.upper())
    return default if value is None or value == "" else value


def check_request(prompt: str, width: int | None, height: int | None, steps: int | None, seed: int | None) -> None:
    """Refuse requests beyond the caps, with messages a model can act on."""
    if not prompt.strip():
        raise ToolError("prompt is empty: describe the image to make")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ToolError(f"prompt is {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}")
    for name, side in (("width", width), ("height", height)):
        if side is not None and not (MIN_SIDE <= side <= MAX_SIDE and side % SIDE_MULTIPLE == 0):
            raise ToolError(
                f"{name} {side} is not allowed: use a multiple of {SIDE_MULTIPLE} from {MIN_SIDE} to {MAX_SIDE}"
            )
    if steps is not None and not 1 <= steps <= MAX_STEPS:
        raise ToolError(f"steps {steps} is not allowed: use 1 to {MAX_STEPS}")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise ToolError(f"seed {seed} is not allowed: use 0 to {MAX_SEED}")


def default_steps(model: str) -> tuple[int, float | None]:
    """(steps, guidance scale) suited to the model; ``None`` keeps the pipeline's own guidance."""
    name = model.lower()
    if "schnell" in name:
        return 4, 0.0
    if "turbo" in name or "lightning" in name or "lcm" in name:
        return 1, 0.0  # distilled without classifier-free guidance: guidance only hurts
    return 25, None


def clamp_side(side: int) -> int:
    return max(MIN_SIDE, min(MAX_SIDE, side - side % SIDE_MULTIPLE))


def imagegen(
    prompt: str,
    context: ToolContext,
    width: int | None = None,
    height: int | None = None,
    steps: int | None = None,
    seed: int | None = None,
) -> ToolResult:
    """Make an image from a text description and save it as a PNG file.

    Args:
        prompt: what the image shows, in plain words (subject, style, lighting)
        width: width in pixels, a multiple of 8 from 64 to 1024; default: the model's native size
        height: height in pixels, a multiple of 8 from 64 to 1024; default: the model's native size
        steps: denoising steps, 1 to 50; more is slower and often finer; default: suited to the model
        seed: random seed, 0 or more; the same seed and arguments give the same image; default: random
    """
    check_request(prompt, width, height, steps, seed)
    model = str(setting(context, "imagegen_model", DEFAULT_MODEL))
    chosen_seed = secrets.randbelow(2**32) if seed is None else seed
    idle_s = float(setting(context, "imagegen_idle_s", DEFAULT_IDLE_S))

    def job(loaded: Loaded) -> ToolResult:
        return _make_image(loaded, context, prompt, width, height, steps, chosen_seed)

    return ENGINE.run(
        model,
        job,
        idle_s=idle_s,
        device=str(setting(context, "imagegen_device", "")),
        dtype=str(setting(context, "imagegen_dtype", "")),
        emit=context.emit,
    )


def _make_image(
    loaded: Loaded,
    context: ToolContext,
    prompt: str,
    width: int | None,
    height: int | None,
    steps: int | None,
    seed: int,
) -> ToolResult:
    import torch

    pipeline = loaded.pipeline
    side = clamp_side(native_size(pipeline))
    width, height = width or side, height or side
    model_steps, guidance = default_steps(loaded.model)
    steps = steps or model_steps
    guidance = _float_or_none(setting(context, "imagegen_guidance"), guidance)
    kwargs = pipeline_arguments(pipeline, prompt, width, height, steps, guidance)
    kwargs["generator"] = torch.Generator("cpu").manual_seed(seed)  # CPU noise: the same seed means the same image
    if "callback_on_step_end" in call_parameters(pipeline):
        kwargs["callback_on_step_end"] = _step_reporter(context, steps)
    started = time.perf_counter()
    try:
        output = pipeline(**kwargs)
    except torch.OutOfMemoryError as exc:
        raise ToolError(f"out of memory making a {width}×{height} image; try a smaller size") from exc
    image = output.images[0]
    seconds = time.perf_counter() - started
    path = save_png(image, Path(context.workdir), seed, {"prompt": prompt, "model": loaded.model, "steps": steps})
    context.emit("artifact", {"path": str(path), "mime": "image/png"})
    flagged = bool((getattr(output, "nsfw_content_detected", None) or [False])[0])
    note = " The model's safety checker blanked it." if flagged else ""
    text = (
        f"Saved {path.name} ({image.width}×{image.height}, {steps} step{'s' * (steps != 1)}, seed {seed}, "
        f"model {loaded.model}) in {seconds:.1f} s.{note}"
    )
    data = {"path": str(path), "seed": seed, "width": image.width, "height": image.height, "steps": steps}
    data |= {"model": loaded.model, "device": loaded.device, "dtype": loaded.dtype, "seconds": seconds}
    return ToolResult(
        text=text,
        source="imagegen",
        artifacts=[Artifact(path, "image/png", f"image {image.width}×{image.height}, seed {seed}")],
        data=data,
    )


def pipeline_arguments(
    pipeline: Any, prompt: str, width: int, height: int, steps: int, guidance: float | None
) -> dict[str, Any]:
    """The keyword arguments for ``pipeline(...)``, leaving out any the pipeline does not take."""
    wanted: dict[str, Any] = {"prompt": prompt, "width": width, "height": height, "num_inference_steps": steps}
    if guidance is not None:
        wanted["guidance_scale"] = guidance
    accepted = call_parameters(pipeline)
    return {key: value for key, value in wanted.items() if key in accepted or key == "prompt"}


def _step_reporter(context: ToolContext, steps: int) -> Any:
    def on_step_end(pipeline: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        # second-order schedulers run more loop iterations than requested steps: report what really runs
        total = int(getattr(pipeline, "num_timesteps", steps) or steps)
        context.emit("imagegen_step", {"step": index + 1, "steps": total})
        return tensors

    return on_step_end


def _float_or_none(value: Any, default: float | None) -> float | None:
    return default if value is None or value == "" else float(value)


def save_png(image: Any, folder: Path, seed: int, metadata: dict[str, Any]) -> Path:
    """Write ``image`` as a new PNG in ``folder`` with ``metadata`` and the seed in tEXt chunks."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in {**metadata, "seed": seed, "width": image.width, "height": image.height}.items():
        info.add_text(key, str(value))
    info.add_text("software", "llmos imagegen")
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(10_000):
        path = folder / (f"imagegen-{seed}.png" if number == 0 else f"imagegen-{seed}-{number}.png")
        try:
            with path.open("xb") as file:  # exclusive create: never overwrite, even when racing another call
                image.save(file, format="PNG", pnginfo=info)
            return path
        except FileExistsError:
            continue
    raise ToolError(f"{folder} already holds 10,000 images for seed {seed}; use another seed or clean up")


imagegen_tool = tool(imagegen)


@hookimpl
def register_tools(register: Any) -> None:
    register(imagegen_tool)
