"""The repository stands on its own: a fresh clone has everything its code and tests read.

Nothing tracked under the code folders may reach outside the checkout for a model (the
story model used to live in a ``shared`` folder beside the project); the story model is a
committed fixture whose bytes are the documented ones.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import REPO, STORIES

CODE_FOLDERS = ["tests", "benchmarks", "llmos", "examples", "scripts", "apps", "tools", "memory", "sandbox"]
CODE_FOLDERS += ["tiny", "evals", "shell"]
# Spelled in pieces so that this file does not match itself (it is skipped anyway).
OUTSIDE = ["../" + "shared", "parent / " + '"shared"', "shared" + "/models"]
STORIES_SHA256 = "270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d"


def _tracked(folders: list[str]) -> list[Path]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", *folders], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    return [REPO / name for name in listed.split("\0") if name]


def test_nothing_reads_outside_the_repository():
    this = Path(__file__).resolve()
    offenders = []
    for path in _tracked(CODE_FOLDERS):
        if path.resolve() == this or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary: a model, an image
        text = data.decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if any(needle in line for needle in OUTSIDE):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "files that read outside the repository:\n" + "\n".join(offenders)


def test_stories_fixture_is_the_documented_model():
    assert STORIES == REPO / "tests" / "fixtures" / "models" / "stories260K.gguf"
    assert STORIES.is_file(), f"{STORIES} is missing from the checkout"
    assert hashlib.sha256(STORIES.read_bytes()).hexdigest() == STORIES_SHA256
    assert STORIES_SHA256 in (STORIES.parent / "README.md").read_text()


def test_stories_fixture_is_not_ignored():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", str(STORIES)], cwd=REPO)
    assert ignored.returncode == 1, f"{STORIES} is ignored by .gitignore"


def test_the_runtime_imports_no_training_evaluation_or_shell_code() -> None:
    """``llmos`` (the runtime) never imports ``llmos_tiny`` (training), ``llmos_evals`` or ``llmos_shell``."""
    offenders = []
    for path in _tracked(["llmos"]):
        if path.suffix == ".py" and re.search(r"^\s*(from|import) llmos_(tiny|evals|shell)", path.read_text(), re.M):
            offenders.append(str(path))
    assert offenders == []
