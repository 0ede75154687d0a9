"""Fixtures shared across the suite: real models, written or found once per session."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from helpers import need_module, stories_model

# the suite never writes into the user's llmos home (session store, plugin cache, models)
os.environ["LLMOS_HOME"] = tempfile.mkdtemp(prefix="llmos-test-home-")
atexit.register(shutil.rmtree, os.environ["LLMOS_HOME"], ignore_errors=True)  # one per run, not one left per run


@pytest.fixture(scope="session")
def llmos_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight GGUF whose vocabulary has the llmos special tokens as control tokens."""
    need_module("gguf")
    need_module("llama_cpp")
    from llmos.dialects.llmos import SPECIAL_TOKENS
    from llmos.testing import write_tiny_gguf

    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "llmos-test.gguf", SPECIAL_TOKENS)


@pytest.fixture(scope="session")
def stories_path() -> Path:
    need_module("llama_cpp")
    return stories_model()
