"""The command line stays fast: nothing heavy is imported to parse arguments or print help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmos.cli import main

HEAVY = ("textual", "pydantic", "huggingface_hub", "llama_cpp", "yaml", "markdown_it")


def test_help_imports_nothing_heavy():
    code = (
        "import sys, contextlib, io\n"
        "from llmos.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["run", "tui", "models", "pull", "chat", "logs", "tools"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0 and "usage: llmos" in capsys.readouterr().out


def test_run_needs_a_task_or_a_run_folder(capsys):
    assert main(["run"]) == 2
    assert "give a task file" in capsys.readouterr().err


def test_out_names_one_run_folder(tmp_path, capsys):
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text("prompt: hi\n")
    assert main(["run", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"), "--out", str(tmp_path / "x")]) == 2
    assert "--runs-dir" in capsys.readouterr().err
