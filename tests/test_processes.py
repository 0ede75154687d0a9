"""Many sessions on one model (llmos.cpu.batch, llmos.processes) and ``llmos ps``, on real SmolLM2."""

from __future__ import annotations

import threading
import time

import pytest
from helpers import smollm2_model

from llmos.cpu import compute
from llmos.cpu.base import Sampling, Segment
from llmos.cpu.batch import BatchEngine, SessionKilled
from llmos.cpu.llama import LlamaCPU
from llmos.kernel import Budgets
from llmos.processes import Processes, ProcessTable

PROMPTS = [
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nTell me about cats.<|im_end|>\n<|im_start|>assistant\n",
]
GREEDY = Sampling(max_tokens=12)


@pytest.fixture(scope="module")
def model():
    return smollm2_model()


@pytest.fixture(scope="module")
def expected(model) -> list[list[int]]:
    """What one plain LlamaCPU decodes for each prompt, alone."""
    cpu = LlamaCPU(model, n_ctx=256, n_threads=1)
    out = []
    for prompt in PROMPTS:
        cpu.load([Segment(prompt)])
        out.append([p.token for p in cpu.generate(GREEDY)])
        cpu.truncate(0)
    cpu.close()
    return out


def _run_all(engine: BatchEngine, prompts: list[str]) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in prompts]

    def run(i: int) -> None:
        cpu = engine.session(title=f"s{i}")
        cpu.load([Segment(prompts[i])])
        out[i] = [p.token for p in cpu.generate(GREEDY)]
        cpu.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return out


def test_batched_sessions_decode_what_each_decodes_alone(model, expected) -> None:
    with BatchEngine(model, slots=3, n_ctx=128, n_threads=1) as engine:
        assert _run_all(engine, PROMPTS) == expected
        assert engine.stats.batch_tokens > engine.stats.batches  # several sessions' tokens per decode
        assert engine.stats.swaps_out == 0


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_more_sessions_than_slots_swap_out_and_back_in_without_reprefilling(model, expected, where, tmp_path) -> None:
    swap_dir = tmp_path / "swap" if where == "disk" else None
    with BatchEngine(model, slots=1, n_ctx=128, n_threads=1, quantum=0.02, swap_dir=swap_dir) as engine:
        assert _run_all(engine, PROMPTS) == expected  # time slices: each is swapped out mid-generation
        assert engine.stats.swaps_in >= 2 and engine.stats.bytes_out > 0
    if swap_dir is not None:
        assert swap_dir.is_dir() and not list(swap_dir.iterdir())  # every swap file was read back and removed


def test_a_swapped_session_restores_its_kv_instead_of_evaluating(model) -> None:
    with BatchEngine(model, slots=1, n_ctx=128, n_threads=1) as engine:
        a, b = engine.session(), engine.session()
        a.load([Segment(PROMPTS[0])])
        first = [p.token for p in a.generate(Sampling(max_tokens=3))]
        evaluated = a.counters.tokens_evaluated
        b.load([Segment(PROMPTS[1])])
        list(b.generate(Sampling(max_tokens=2)))  # b takes the only slot: a (idle) is swapped out
        assert [p.state for p in engine.processes()] == ["swapped", "idle"]
        rest = [p.token for p in a.generate(Sampling(max_tokens=3))]
        assert a.counters.restored_tokens == evaluated  # put back, not evaluated again
        assert a.counters.tokens_evaluated == evaluated + 3  # only the new tokens
        plain = LlamaCPU(model, n_ctx=128, n_threads=1)
        plain.load([Segment(PROMPTS[0])])
        assert [p.token for p in plain.generate(Sampling(max_tokens=6))] == first + rest
        plain.close()


def test_kv_edits_of_one_session_leave_the_others_alone(model) -> None:
    """replace_span (the pager's page-out) on a session while another is resident."""
    with BatchEngine(model, slots=2, n_ctx=256, n_threads=1) as engine:
        a, b = engine.session(), engine.session()
        b.load([Segment(PROMPTS[1])])
        b_first = [p.token for p in b.generate(Sampling(max_tokens=2))]
        a.load([Segment(PROMPTS[2])])
        list(a.generate(Sampling(max_tokens=2)))
        stub = a.tokenize(" [paged out]", special=False)
        assert a.replace_span(5, 12, stub)
        saved = a.save_span(2, 6)
        assert saved and a.n_evaluated == len(a.tokens)
        rest = [p.token for p in b.generate(Sampling(max_tokens=4))]
        plain = LlamaCPU(model, n_ctx=256, n_threads=1)
        plain.load([Segment(PROMPTS[1])])
        assert [p.token for p in plain.generate(Sampling(max_tokens=6))] == b_first + rest
        plain.close()


def test_pause_resume_and_kill(model) -> None:
    with BatchEngine(model, slots=2, n_ctx=128, n_threads=1) as engine:
        cpu = engine.session(title="victim")
        cpu.load([Segment(PROMPTS[2])])
        engine.pause(cpu.id)
        got: list[int] = []
        failed: list[BaseException] = []

        def run() -> None:
            try:
                for piece in cpu.generate(Sampling(max_tokens=40)):
                    got.append(piece.token)
            except SessionKilled as exc:
                failed.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(0.5)
        assert got == [] and engine.processes()[0].state == "paused"
        engine.resume(cpu.id)
        while len(got) < 3:
            time.sleep(0.01)
        engine.kill(cpu.id)
        thread.join(timeout=30)
        assert failed and "killed" in str(failed[0]) and len(got) < 40


def test_a_bug_in_the_engine_raises_in_the_waiting_session_and_the_engine_goes_on(model, expected) -> None:
    with BatchEngine(model, slots=1, n_ctx=128, n_threads=1) as engine:
        decode, broken = engine._run_batch, []

        def fails_once() -> None:
            if not broken:
                broken.append(True)
                raise RuntimeError("a bug in the batch")
            decode()

        engine._run_batch = fails_once  # type: ignore[method-assign]
        cpu = engine.session()
        cpu.load([Segment(PROMPTS[0])])
        with pytest.raises(RuntimeError, match="a bug in the batch"):
            list(cpu.generate(GREEDY))
        assert [p.token for p in cpu.generate(GREEDY)] == expected[0]


def test_sessions_share_one_model_through_the_kernel_and_ps_lists_them(model, tmp_path, capsys) -> None:
    from llmos_shell.cli import main

    table = tmp_path / "processes.sqlite"
    with Processes.open(str(model), slots=2, n_ctx=512, n_threads=1, table=table) as processes:
        sessions: list = [None, None]
        answers: list[str] = ["", ""]
        failures: list[BaseException] = []
        opened, gate = threading.Barrier(3, timeout=60), threading.Event()

        def ask(i: int) -> None:  # a session is opened in its own thread (the store's connection is)
            try:
                sessions[i] = processes.session(
                    tools=["calculator"], title=f"job {i}", store=tmp_path / "s.db", memory=tmp_path / "m.sqlite",
                    budgets=Budgets(max_tokens=24, max_step_tokens=24),
                )  # fmt: skip
                opened.wait()
                gate.wait(timeout=60)
                for event in sessions[i].ask(["What is 2+2?", "Say hello."][i]):
                    if event.kind == "done":
                        answers[i] = event.answer  # type: ignore[attr-defined]
                sessions[i].close()
            except BaseException as exc:  # a thread that dies must fail the test, not hang it
                failures.append(exc)
                opened.abort()

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        try:
            opened.wait()
        except threading.BrokenBarrierError:
            pytest.fail(f"a session did not open: {failures!r}")
        processes.publish()
        assert main(["ps", "--table", str(table)]) == 0
        listing = capsys.readouterr().out
        assert "job 0" in listing and "job 1" in listing and "0/24" in listing
        gate.set()
        for thread in threads:
            thread.join(timeout=120)
        assert failures == []
        assert all(answers) and answers[0] != answers[1]
        ids = {s.kernel.cpu.session_id for s in sessions}
        assert ids == {s.id for s in sessions}
        assert all(0 < s.kernel.cpu.counters.tokens_sampled <= 24 for s in sessions)
        processes.publish()
        assert ProcessTable(table).rows() == []  # closed sessions leave the table


def test_ps_kill_reaches_a_session_of_the_process(model, tmp_path, capsys) -> None:
    from llmos_shell.cli import main

    table = tmp_path / "processes.sqlite"
    with Processes.open(str(model), slots=1, n_ctx=256, n_threads=1, table=table) as processes:
        cpu = processes.machine(title="long job").cpu
        processes.publish()
        row = ProcessTable(table).rows()[0]
        assert row["title"] == "long job" and row["state"] == "idle"
        assert main(["ps", "--table", str(table), "--kill", row["id"]]) == 0
        assert "kill requested" in capsys.readouterr().out
        processes.publish()  # the owner applies the request
        cpu.load([Segment(PROMPTS[0])])
        with pytest.raises(SessionKilled):
            list(cpu.generate(GREEDY))
    assert main(["ps", "--table", str(table), "--kill", "nope"]) == 2  # no such session: a usage error


def test_jobs_on_one_local_model_share_it(model, tmp_path, monkeypatch) -> None:
    from llmos_shell import runner
    from llmos_shell.task import load_task

    opened: list[Processes] = []
    original = Processes.open.__func__  # type: ignore[attr-defined]

    def counting(cls, *args, **kwargs):
        kwargs.update(n_threads=1, table=tmp_path / "processes.sqlite")
        opened.append(original(cls, *args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(Processes, "open", classmethod(counting))
    tasks = []
    for n in range(3):
        path = tmp_path / f"t{n}.yaml"
        path.write_text(
            f"prompt: Say the number {n}.\nmodel: {model}\ntools: []\nn_ctx: 512\n"
            "budgets: {tokens: 16, step_tokens: 16}\n"
        )
        tasks.append((path, load_task(path)))
    opts = runner.RunOptions(runs_dir=tmp_path / "runs", store=tmp_path / "s.db")
    results = runner.run_many(tasks, opts, jobs=2, make_display=lambda label: runner.Display())
    assert len(opened) == 1 and opened[0].engine.slots == 2  # one model loaded, two slots
    assert len({r.folder for r in results}) == 3 and all(r.exit_code in (0, 3) for r in results)
    assert all((r.folder / "summary.json").is_file() for r in results)


def test_every_decode_of_every_cpu_runs_on_the_one_compute_thread(model, expected, monkeypatch) -> None:
    """llama.cpp's OpenMP keeps a worker team per thread that decodes, and two teams on a small
    machine throttle each other (llmos.cpu.compute): the plain CPU's decodes in this thread and the
    engine's batches in its own all run on the compute thread, and they decode what they decode alone."""
    import llama_cpp

    ran_on: set[int] = set()
    raw = llama_cpp.llama_decode

    def recorded(ctx, batch):
        ran_on.add(threading.get_ident())
        return raw(ctx, batch)

    monkeypatch.setattr(llama_cpp, "llama_decode", recorded)
    plain = LlamaCPU(model, n_ctx=256, n_threads=1)
    plain.load([Segment(PROMPTS[0])])
    assert [p.token for p in plain.generate(GREEDY)] == expected[0]
    plain.close()
    engine = BatchEngine(model, slots=3, n_ctx=256, n_threads=1)
    try:
        assert _run_all(engine, PROMPTS) == expected
    finally:
        engine.close()
    assert ran_on == {compute.compute_thread_ident()}
    assert threading.get_ident() not in ran_on


def test_the_compute_thread_raises_in_the_caller_and_runs_its_own_calls_directly() -> None:
    with pytest.raises(ZeroDivisionError):
        compute.run(lambda: 1 / 0)
    # a call made on the compute thread itself runs there at once instead of waiting for itself
    assert compute.run(compute.run, threading.get_ident) == compute.compute_thread_ident()


def test_a_caller_interrupted_while_it_waits_hears_of_it_once_the_call_is_over() -> None:
    """Ctrl-C in a thread waiting for its decode: the decode still reads the caller's batch, so the
    KeyboardInterrupt comes after it, as it did when the decode ran in the caller's thread."""
    import signal

    assert threading.current_thread() is threading.main_thread()  # where Python delivers SIGINT
    over = threading.Event()

    def slow_call() -> None:
        time.sleep(0.5)
        over.set()

    interrupt = threading.Timer(0.1, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    interrupt.start()
    with pytest.raises(KeyboardInterrupt):
        compute.run(slow_call)
    assert over.is_set()
