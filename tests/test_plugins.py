"""Plugins: the Toolbox API, LLMOS_PLUGINS, broken plugins, lazy loading from the spec cache, and
the example plugin installed by a real ``pip install`` into a fresh virtual environment."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import types
from pathlib import Path

import pytest
from llmos_tools import Effect, Registry, Toolbox, hookimpl, load_tools, tool
from llmos_tools.plugins import plugin_filter

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "plugin"


class Counter(Toolbox):
    prefix = "counter_"

    def __init__(self) -> None:
        self.value = 0

    @tool(effects={Effect.WRITES})
    def bump(self, by: int = 1) -> str:
        """Add to the counter."""
        self.value += by
        return str(self.value)

    @tool
    def read(self) -> str:
        """Read the counter."""
        return str(self.value)


def test_a_toolbox_binds_its_tools_to_one_instance():
    first, second = Counter(), Counter()
    bump, read = first.tools()
    assert (bump.name, read.name) == ("counter_bump", "counter_read")
    assert "self" not in bump.parameters["properties"] and bump.effects == {Effect.WRITES}
    assert bump.run({"by": 2}).text == "2" and read.run({}).text == "2" and second.value == 0
    registry = Registry()
    registry.add(second)
    registry.add(Counter.bump)  # the unbound method: a clear problem, not a crash
    assert registry.names() == ["counter_bump", "counter_read"]
    assert "register an instance of its Toolbox" in registry.problems[0]


def test_plugin_filter_allows_and_denies():
    assert plugin_filter(None) == (None, set())
    assert plugin_filter("calculator, python") == ({"calculator", "python"}, set())
    assert plugin_filter("-python,-browser") == (None, {"python", "browser"})
    assert plugin_filter("") == (set(), set())


def test_denied_plugins_do_not_load(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path))
    monkeypatch.setenv("LLMOS_PLUGINS", "-calculator")
    assert "calculator" not in load_tools()
    monkeypatch.setenv("LLMOS_PLUGINS", "calculator")
    assert load_tools().names() == ["calculator"]


def plugin(name: str, hook) -> types.ModuleType:
    module = types.ModuleType(name)
    module.register_tools = hookimpl(hook)
    return module


def test_broken_and_clashing_plugins_are_reported_and_skipped(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path))

    @tool
    def calculator(expression: str) -> str:
        """A second calculator."""
        return "0"

    def explode(register):
        raise RuntimeError("no config")

    plugins = [plugin("clash", lambda register: register(calculator)), plugin("broken", explode)]
    registry = load_tools(extra_plugins=plugins, allow={"calculator"})
    assert registry["calculator"].plugin == "calculator"
    assert any("'clash'" in p and "already registered by 'calculator'" in p for p in registry.problems)
    assert any("'broken' failed to load: RuntimeError: no config" in p for p in registry.problems)


def write_plugin(site: Path, name: str, body: str) -> Path:
    """A plugin package and its dist-info in ``site``: what pip would leave behind."""
    module = site / f"{name}.py"
    module.write_text(textwrap.dedent(body))
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[llmos]\n{name} = {name}\n")
    return module


LAZY = """
    from llmos_tools import Effect, hookimpl, tool

    @tool(effects={EFFECTS})
    def lazy_echo(text: str) -> str:
        '''Echo the text.'''
        return "echo: " + text

    @hookimpl
    def register_tools(register):
        register(lazy_echo)
"""


def test_a_cached_plugin_is_imported_only_when_its_tool_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "home"))
    site = tmp_path / "site"
    site.mkdir()
    module = write_plugin(site, "lazyplug", LAZY.replace("{EFFECTS}", "{Effect.NETWORK}"))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "lazyplug", raising=False)

    assert "lazy_echo" in load_tools(allow={"lazyplug"})  # cold: imported, specs cached
    assert "lazyplug" in sys.modules
    del sys.modules["lazyplug"]
    warm = load_tools(allow={"lazyplug"})
    assert "lazyplug" not in sys.modules  # warm: listed from the cache, nothing imported
    echo = warm["lazy_echo"]
    assert echo.effects == {Effect.NETWORK} and echo.parameters["required"] == ["text"]
    assert echo.run({"text": "hi"}).text == "echo: hi" and "lazyplug" in sys.modules

    # the plugin changes and now declares more effects than the policy was shown: the call is refused
    module.write_text(textwrap.dedent(LAZY.replace("{EFFECTS}", "{Effect.NETWORK, Effect.SENDS_OUT}")))
    from llmos_tools import plugins

    stale = warm["lazy_echo"]
    plugins._LazyFunction._loaded.clear()  # as in a new process that listed the tool from the old cache
    del sys.modules["lazyplug"]
    with pytest.raises(RuntimeError, match="more effects"):
        stale.run({"text": "hi"})
    fresh = load_tools(allow={"lazyplug"})  # the stamp changed with the file: re-imported, new effects
    assert fresh["lazy_echo"].effects == {Effect.NETWORK, Effect.SENDS_OUT}


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory) -> Path:
    """A fresh venv that sees this project's environment and has the example plugin pip-installed."""
    root = tmp_path_factory.mktemp("venv")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    host = sysconfig.get_paths()["purelib"]  # llmos (editable) and its dependencies
    Path(site, "llmos-host.pth").write_text(f"import site; site.addsitedir({host!r})\n")
    broken = root / "broken"
    (broken / "llmos_broken").mkdir(parents=True)
    (broken / "llmos_broken" / "__init__.py").write_text("import a_module_that_does_not_exist\n")
    (broken / "pyproject.toml").write_text(
        '[project]\nname = "llmos-broken"\nversion = "0.1"\n'
        '[project.entry-points.llmos]\nbroken = "llmos_broken"\n[tool.setuptools]\npackages = ["llmos_broken"]\n'
    )
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-build-isolation", "--no-index"]
    example = root / "example"  # a copy: setuptools builds in the source tree
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([*install, "--no-deps", str(example), str(broken)], check=True, timeout=120, capture_output=True)
    return python


def in_venv(python: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "LLMOS_HOME": str(home), "LLMOS_NOTES": str(home / "notes.jsonl")}
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=60, env=env, cwd=home)


def test_the_example_plugin_installs_lists_and_runs_through_the_kernel(plugin_venv, tmp_path):
    listing = in_venv(plugin_venv, tmp_path, "-m", "llmos_shell.cli", "tools")
    assert listing.returncode == 0, listing.stderr
    lines = {line.split()[0]: line for line in listing.stdout.splitlines()}
    assert "[writes] (notes)" in lines["notes_add"] and "[read-only] (notes)" in lines["word_count"]
    assert "calculator" in lines  # the built-in apps come through the same entry-point path
    assert "plugin 'broken' failed to load: ModuleNotFoundError" in listing.stderr  # reported, skipped

    script = """
        import json
        from llmos.dialects.llmos import CALL, CALL_END, LlmosDialect
        from llmos.kernel import Kernel
        from llmos.testing import ScriptedCPU
        from llmos_tools import load_tools

        def call(name, **arguments):
            return CALL + json.dumps({"name": name, "arguments": arguments}) + CALL_END

        outputs = [call("notes_add", text="the meeting is at noon"), call("notes_search", query="meeting"),
                   call("word_count", text="one two three"), "Done."]
        kernel = Kernel(ScriptedCPU(outputs), LlmosDialect(), load_tools())
        print(json.dumps([e.text for e in kernel.ask("Note the meeting.") if e.kind == "result"]))
    """
    ran = in_venv(plugin_venv, tmp_path, "-c", textwrap.dedent(script))
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == ["noted (1 notes)", "- the meeting is at noon", "3"]
    assert "noon" in (tmp_path / "notes.jsonl").read_text()
