"""``llmos run --ray``: task files fanned out over a real Ray cluster (a local head of its own).

One Ray head serves the whole module (it takes seconds to start). The model is a ScriptedCPU
chosen by the run options' machine factory, which Ray pickles to its worker processes; the
workers, the retries after a worker is SIGKILLed, the tar round trip, the store and the
reports are real. One test runs the real story model through the command line.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
from helpers import REPO, need_module
from llmos_shell import fanout, runner
from llmos_shell.cli import main
from llmos_shell.task import Task, load_task

from llmos.dialects.llmos import END, LlmosDialect
from llmos.models import Machine
from llmos.testing import ScriptedCPU, scripted_call


@pytest.fixture(scope="module")
def ray_cluster():
    need_module("ray")
    import ray

    # the workers are other processes: this module's functions travel by value, not by import
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = time.monotonic()
    # a head of its own on this machine (Ray turns 127.0.0.1 into the host's own address: it will not bind loopback)
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    print(f"ray head started in {time.monotonic() - started:.1f}s")
    yield ray
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def answering(task: Task) -> Machine:
    """Each task's model does one calculator call, then answers with the task's own number."""
    number = task.prompt.split()[-1]
    script = [scripted_call("calculator", expression=f"{number}*2"), f"Task {number} done.{END}"]
    return Machine(ScriptedCPU(script), LlmosDialect(), "scripted")


def killed_first(attempts: Path, kills: int, task: Task) -> Machine:
    """The worker's process dies (SIGKILL) on its first ``kills`` attempts at this task, then answers."""
    with attempts.open("a") as log:
        log.write(f"{os.getpid()}\n")
    if len(attempts.read_text().splitlines()) <= kills:
        os.kill(os.getpid(), signal.SIGKILL)
    return answering(task)


def task_files(folder: Path, count: int) -> list[tuple[Path, Task]]:
    folder.mkdir(parents=True, exist_ok=True)
    tasks = []
    for n in range(count):
        path = folder / f"task{n:02d}.yaml"
        path.write_text(f"prompt: Compute task {n}\ntools: [calculator]\nchecks: [{{answer_contains: 'Task {n} '}}]\n")
        tasks.append((path, load_task(path)))
    return tasks


def fan_out(tmp_path: Path, tasks: list[tuple[Path, Task]], factory, retries: int = 2) -> list[runner.RunResult]:
    options = runner.RunOptions(runs_dir=tmp_path / "runs", machine_factory=factory)
    return fanout.run_on_ray(tasks, options, "local", lambda label: runner.Display(), retries=retries)


def test_24_tasks_come_back_each_in_its_own_complete_run_folder(ray_cluster, tmp_path):
    tasks = task_files(tmp_path / "tasks", 24)
    started = time.monotonic()
    results = fan_out(tmp_path, tasks, answering)
    print(f"24 tasks fanned out and gathered in {time.monotonic() - started:.1f}s")
    assert [r.exit_code for r in results] == [0] * 24
    assert len({r.folder for r in results}) == 24 and all(r.folder.parent == tmp_path / "runs" for r in results)
    hosts = set()
    for n, ((source, _), result) in enumerate(zip(tasks, results, strict=True)):
        folder = result.folder
        assert result.answer == f"Task {n} done." == (folder / "answer.md").read_text().strip()
        assert (folder / "task.yaml").read_text() == source.read_text()
        run = json.loads((folder / "run.json").read_text())
        assert run["session"] == result.session_id and run["store"] == str(folder / "sessions.db")
        hosts.add(run["worker"]["host"])
        assert json.loads((folder / "summary.json").read_text())["folder"] == str(folder)
        transcript = json.loads((folder / "transcript.json").read_text())
        results_seen = [e["data"]["text"] for e in transcript["events"] if e["kind"] == "result"]
        assert results_seen == [str(n * 2)]
        assert "Task" in (folder / "report.html").read_text() and (folder / "report.md").is_file()
        with sqlite3.connect(folder / "sessions.db") as db:  # the session store came back too, checkpointed
            assert db.execute("SELECT id FROM sessions").fetchall() == [(result.session_id,)]
    assert len(hosts) == 1  # one machine here; the folders still travelled as tar bytes


def test_a_worker_killed_mid_task_is_retried(ray_cluster, tmp_path):
    attempts = tmp_path / "attempts"
    tasks = task_files(tmp_path / "tasks", 1)
    [result] = fan_out(tmp_path, tasks, partial(killed_first, attempts, 1), retries=2)
    pids = attempts.read_text().split()
    assert len(pids) == 2 and pids[0] != pids[1]  # the second attempt ran in a new worker process
    assert (result.exit_code, result.answer) == (0, "Task 0 done.")
    assert (result.folder / "transcript.json").is_file()


def test_a_task_whose_worker_always_dies_is_reported_not_dropped(ray_cluster, tmp_path):
    tasks = task_files(tmp_path / "tasks", 3)
    attempts = tmp_path / "attempts"

    def factory(task: Task) -> Machine:  # task 1 kills its worker on every attempt
        return killed_first(attempts, 99, task) if task.prompt.endswith(" 1") else answering(task)

    results = fan_out(tmp_path, tasks, factory, retries=1)
    assert len(attempts.read_text().split()) == 2  # the first attempt and one retry
    assert [r.exit_code for r in results] == [0, 1, 0]
    lost = results[1]
    assert lost.status == "error" and "worker was lost on every attempt (2)" in lost.answer
    assert "WorkerCrashedError" in lost.answer
    summary = json.loads((lost.folder / "summary.json").read_text())
    assert summary["exit_code"] == 1 and summary["answer"] == lost.answer
    assert "worker was lost" in (lost.folder / "report.md").read_text()
    assert (lost.folder / "task.yaml").read_text() == tasks[1][0].read_text()


def test_a_run_that_raises_on_its_worker_is_reported_with_its_error(ray_cluster, tmp_path):
    tasks = task_files(tmp_path / "tasks", 1)
    bad = tasks[0][1].model_copy(update={"tools": ["no_such_tool"]})
    [result] = fan_out(tmp_path, [(tasks[0][0], bad)], answering)
    assert result.exit_code == 2 and "TaskError" in result.answer and "no_such_tool" in result.answer


def story_tasks(folder: Path, stories_path: Path, count: int) -> list[Path]:
    """Copies of examples/loop-demo.yaml with the model's absolute path (its relative one is resolved here)."""
    text = (REPO / "examples" / "loop-demo.yaml").read_text()
    text = text.replace("../tests/fixtures/models/stories260K.gguf", str(stories_path))
    files = [folder / f"demo{n}.yaml" for n in range(count)]
    for path in files:
        path.write_text(text)
    return files


def assert_story_runs(runs: Path, count: int) -> list[Path]:
    folders = sorted(runs.iterdir())
    assert len(folders) == count
    for folder in folders:
        transcript = json.loads((folder / "transcript.json").read_text())
        assert any(e["kind"] == "result" and e["data"]["name"] == "calculator" for e in transcript["events"])
    return folders


def test_the_cli_runs_the_story_model_on_the_cluster_it_joins(ray_cluster, tmp_path, capsys, stories_path):
    files = story_tasks(tmp_path, stories_path, 1)  # one: two llama.cpp workers would fight for two cores
    # a bare --ray before the task file: the file is a task, not an address
    code = main(["run", "--ray", str(files[0]), "--runs-dir", str(tmp_path / "runs")])
    assert code in (0, 3)  # the story model's prose may run past its step budget; the loop is what counts
    folders = assert_story_runs(tmp_path / "runs", 1)
    printed = capsys.readouterr().out  # one run: its answer, as answer.md has it
    assert printed.strip() and printed.strip() in (folders[0] / "answer.md").read_text()
    assert main(["logs", "--store", str(folders[0] / "sessions.db"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["title"] == "What is 15% of 1,240?"


def test_ray_local_starts_a_head_for_the_run(tmp_path, stories_path):
    """`llmos run --ray local` in its own process: ray.init there, and ray.shutdown when it is done."""
    need_module("ray")
    files = story_tasks(tmp_path, stories_path, 1)
    command = [sys.executable, "-m", "llmos_shell.cli", "run", "--ray", "local", str(files[0])]
    done = subprocess.run([*command, "--runs-dir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 3), done.stderr[-2000:]
    assert "Started a local Ray instance" in done.stderr
    assert_story_runs(tmp_path / "runs", 1)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--store", "s.db"], "RUN/sessions.db"),
        (["--jobs", "2"], "--jobs and --ray"),
        (["--resume", "x"], "drop --ray"),
    ],
)
def test_the_cli_refuses_options_that_mean_nothing_on_ray(tmp_path, capsys, extra, message):
    (tmp_path / "a.yaml").write_text("prompt: hi\n")
    assert main(["run", "--ray", "local", str(tmp_path / "a.yaml"), *extra]) == 2
    assert message in capsys.readouterr().err
