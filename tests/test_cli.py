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


def exception_classes() -> list[type[BaseException]]:
    """Every exception class defined in llmos and its packages (found in the source, then imported)."""
    import ast
    import importlib

    from helpers import REPO

    found = []
    for root in ["llmos", "tools", "memory", "sandbox", "apps", "shell", "tiny", "evals"]:
        for path in sorted((REPO / root).rglob("*.py")):
            tree = ast.parse(path.read_text())
            names = [
                node.name
                for node in tree.body
                if isinstance(node, ast.ClassDef)
                and any(ast.unparse(base).endswith(("Error", "Exception")) for base in node.bases)
            ]
            if names:
                relative = path.relative_to(REPO if root == "llmos" else REPO / root).with_suffix("")
                module = importlib.import_module(".".join(relative.parts).removesuffix(".__init__"))
                found += [getattr(module, name) for name in names]
    return [cls for cls in found if isinstance(cls, type) and issubclass(cls, BaseException)]


def test_every_error_llmos_raises_derives_from_one_root_and_has_an_exit_code() -> None:
    from llmos_errors import LlmosError
    from llmos_shell.cli import exit_code_for

    classes = exception_classes()
    assert len(classes) >= 20  # the walk found them
    for cls in classes:
        assert issubclass(cls, LlmosError), f"{cls.__module__}.{cls.__qualname__} is not an LlmosError"
        assert exit_code_for(cls.__new__(cls)) in (1, 2)


@pytest.mark.parametrize("error", ["TaskError", "CPUError", "StoreError", "SandboxError", "LlmosError"])
def test_an_error_is_one_line_and_an_exit_code(error, monkeypatch, capsys) -> None:
    from llmos_shell import cli

    cls = {c.__name__: c for c in exception_classes()}.get(error) or __import__("llmos_errors").LlmosError
    expected = 2 if error == "TaskError" else 1

    def fail(args):
        raise cls.__new__(cls, "something the person must fix")  # type: ignore[call-arg]

    monkeypatch.setattr(cli, "_models", fail)
    assert cli.main(["models"]) == expected
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("llmos: ") and "Traceback" not in err


def test_a_bug_keeps_its_traceback(monkeypatch) -> None:
    from llmos_shell import cli

    def fail(args):
        raise ZeroDivisionError("a bug in llmos")

    monkeypatch.setattr(cli, "_models", fail)
    with pytest.raises(ZeroDivisionError):
        cli.main(["models"])
