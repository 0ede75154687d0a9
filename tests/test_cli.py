"""The command line stays fast: nothing heavy is imported to parse arguments or print help."""

from __future__ import annotations

import subprocess
import sys

import pytest
from llmos_shell.cli import main

HEAVY = ("textual", "pydantic", "huggingface_hub", "llama_cpp", "yaml", "markdown_it")


def test_help_imports_nothing_heavy():
    code = (
        "import sys, contextlib, io\n"
        "from llmos_shell.cli import main\n"
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


# Errors that never reach a person: the model reads them as results, or they stay inside one module.
FOR_THE_MODEL_OR_INTERNAL = {
    "llmos.dialects.base.CallSyntaxError",  # a malformed call: a result the model reads
    "llmos_tools.errors.ToolError",  # a tool's refusal: a result the model reads
    "llmos_apps.browser.guard.BlockedURL",  # the browser's refusal: a result the model reads
    "llmos_apps.browser.fetch.FetchError",  # a page that cannot be fetched: a result the model reads
    "llmos_memory.pagetable.RamFull",  # the page table's own signal to its caller
    "llmos.pull._Retry",  # the pull's retry loop
}


def exception_classes() -> list[type[BaseException]]:
    """Every exception class defined in llmos and its packages (found in the source, then imported)."""
    import ast
    import importlib

    from helpers import REPO

    found = []
    roots = [REPO / "llmos", REPO / "tools", REPO / "memory", REPO / "sandbox", REPO / "apps"]
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if "tiny" in path.parts:
                continue  # the trainer: no command reaches it through main()
            names = [
                node.name
                for node in ast.parse(path.read_text()).body
                if isinstance(node, ast.ClassDef)
                and any(ast.unparse(b).endswith(("Error", "Exception")) for b in node.bases)
            ]
            if names:
                relative = path.relative_to(root.parent if root.name == "llmos" else root).with_suffix("")
                module = importlib.import_module(".".join(relative.parts).removesuffix(".__init__"))
                found += [getattr(module, name) for name in names]
    return [cls for cls in found if isinstance(cls, type) and issubclass(cls, BaseException)]


def test_every_error_a_person_can_meet_has_an_exit_code() -> None:
    from llmos_shell.cli import exit_code_for

    classes = exception_classes()
    assert len(classes) >= 15  # the walk found them
    for cls in classes:
        name = f"{cls.__module__}.{cls.__qualname__}"
        if name in FOR_THE_MODEL_OR_INTERNAL:
            continue
        assert exit_code_for(cls.__new__(cls)) in (1, 2), f"{name} would reach the terminal as a traceback"


@pytest.mark.parametrize("entry", __import__("llmos_shell.cli", fromlist=["USER_ERRORS"]).USER_ERRORS)
def test_each_user_error_is_one_line_and_an_exit_code(entry, monkeypatch, capsys) -> None:
    import importlib

    from llmos_shell import cli

    module, name, code = entry
    error = getattr(importlib.import_module(module), name)

    def fail(args):
        raise error.__new__(error, "something the person must fix")  # type: ignore[call-arg]

    monkeypatch.setattr(cli, "_models", fail)
    assert cli.main(["models"]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("llmos: ") and "Traceback" not in err
