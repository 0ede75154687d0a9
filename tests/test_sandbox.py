"""The sandbox against a real ipykernel: behaviour, the escape and fault suite, the pool."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import need, need_module

need_module("ipykernel")
need_module("jupyter_client")

from llmos_sandbox import (  # noqa: E402
    Isolation,
    IsolationError,
    Limits,
    Sandbox,
    SandboxConfig,
    SandboxPool,
    probe,
)
from llmos_sandbox.kernel import effective_isolation  # noqa: E402

SECRET = "llmos-test-secret-8c1f"
CONFIG = SandboxConfig(
    timeout=20,
    interrupt_grace=1.0,
    max_output_chars=2_000,
    max_output_bytes=4 * 2**20,
    limits=Limits(memory_bytes=2 * 2**30, file_size_bytes=8 * 2**20, processes=48),
)


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    os.environ["LLMOS_FAKE_API_KEY"] = SECRET  # planted in the parent before the kernel starts
    try:
        with Sandbox(CONFIG) as sandbox:
            yield sandbox
    finally:
        os.environ.pop("LLMOS_FAKE_API_KEY", None)


def run_ok(box: Sandbox, code: str) -> str | None:
    result = box.run(code, timeout=20)
    assert result.ok, (result.error, result.notes)
    return result.value


# --- the level ---------------------------------------------------------------------------


def test_probe_reports_a_level() -> None:
    level = probe()
    assert isinstance(level.network, bool) and isinstance(level.writes, bool)
    assert level.level.startswith("network: ")
    assert json.dumps(level.as_dict())


def test_fails_closed_when_more_is_required_than_the_host_gives(tmp_path: Path) -> None:
    weak = Isolation(network=False, writes=False, processes=False)
    with pytest.raises(IsolationError, match="network isolation is required"):
        Sandbox(SandboxConfig(network="require", root=str(tmp_path)), isolation=weak)
    with pytest.raises(IsolationError, match="write confinement is required"):
        effective_isolation(SandboxConfig(confine_writes="require"), weak)
    assert list(tmp_path.iterdir()) == []  # nothing was started or created
    assert effective_isolation(SandboxConfig(network="allow"), probe()).network is False


def test_strict_mode_refuses_a_missing_layer() -> None:
    partial = Isolation(True, True, True, reads=True, user=False, seccomp=True, quota=False, notes=("quota: refused",))
    with pytest.raises(IsolationError, match="strict mode: this sandbox would lack user, quota"):
        effective_isolation(SandboxConfig(strict=True), partial)
    with pytest.raises(IsolationError, match="read confinement is required"):
        effective_isolation(SandboxConfig(confine_reads="require", confine_writes="off"), probe())
    assert effective_isolation(SandboxConfig(), partial).missing == ("user", "quota")  # prefer: runs, says so
    host = probe()
    need(not host.missing, f"this host lacks {host.missing}: {host.notes}")
    assert effective_isolation(SandboxConfig(strict=True), host).missing == ()


# --- ordinary use ------------------------------------------------------------------------


def test_state_persists_and_outputs_are_captured(box: Sandbox) -> None:
    result = box.run("import sys\nvalue = 6 * 7\nprint('out'); print('err', file=sys.stderr)\nvalue")
    assert (result.stdout, result.stderr, result.value) == ("out\n", "err\n", "42")
    assert run_ok(box, "value + 1") == "43"
    result = box.run("from IPython.display import HTML, display\ndisplay(HTML('<b>hi</b>'))")
    assert result.outputs[0].kind == "display_data" and result.outputs[0].data["text/html"] == "<b>hi</b>"


def test_errors_come_back_with_their_traceback(box: Sandbox) -> None:
    result = box.run("def f():\n    raise ValueError('bad input')\nf()")
    assert not result.ok and result.error is not None
    assert (result.error.name, result.error.value) == ("ValueError", "bad input")
    assert "\x1b[" not in result.error.last_lines() and "f()" in result.error.last_lines()
    syntax = box.run("def (")
    assert syntax.error is not None and syntax.error.name == "SyntaxError"
    assert run_ok(box, "'still here'") == "'still here'"


def test_private_folders_and_ipc_transport(box: Sandbox) -> None:
    assert stat.S_IMODE(box.root.stat().st_mode) == 0o700
    connection = json.loads((box.rundir / "connection.json").read_text())
    assert connection["transport"] == "ipc"
    assert stat.S_IMODE((box.rundir / "connection.json").stat().st_mode) == 0o600
    assert run_ok(box, "import os; os.getcwd()") == repr(str(box.workdir))
    assert box._session.unpack.__module__.startswith("jupyter_client")  # json, never pickle
    assert "json" in box._session.unpack.__name__


def test_bad_output_is_truncated_and_kept_in_a_file(box: Sandbox) -> None:
    result = box.run("for i in range(1000): print(f'line {i}')")
    assert result.output_truncated and len(result.stdout) == 2_000
    kept = result.overflow_files[0].read_text()
    assert kept.splitlines() == [f"line {i}" for i in range(1000)]


# --- the escape and fault suite ----------------------------------------------------------


def test_secret_in_parent_environment_is_not_there(box: Sandbox) -> None:
    assert run_ok(box, "import os; os.environ.get('LLMOS_FAKE_API_KEY')") is None
    assert run_ok(box, f"import os; any({SECRET!r} in v for v in os.environ.values())") == "False"


def test_infinite_loop_is_interrupted_and_state_is_kept(box: Sandbox) -> None:
    box.run("kept = 'yes'")
    result = box.run("while True:\n    pass", timeout=1)
    assert result.timed_out and not result.restarted
    assert result.error is not None and result.error.name == "KeyboardInterrupt"
    assert run_ok(box, "kept") == "'yes'"


def test_loop_ignoring_sigint_is_killed_and_the_model_is_told(box: Sandbox) -> None:
    box.run("lost = 1")
    code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
    result = box.run(code, timeout=1)
    assert result.timed_out and result.killed and result.restarted
    assert any("variables are lost" in note for note in result.notes)
    assert box.run("lost").error.name == "NameError"  # type: ignore[union-attr]
    assert run_ok(box, "1 + 1") == "2"


def test_fork_bomb_is_contained(box: Sandbox) -> None:
    need(box.isolation.processes, f"process count is not limited on this host: {box.isolation.level}")
    result = box.run("import os\nwhile True:\n    os.fork()", timeout=15)
    assert not result.ok
    assert run_ok(box, "1 + 1") == "2"
    assert run_ok(box, "import os; len(os.listdir('/proc/self/task'))") is not None


def test_memory_bomb_gets_memory_error(box: Sandbox) -> None:
    result = box.run("hog = bytearray(16 * 2**30)")
    assert result.memory_exceeded and result.error.name == "MemoryError"  # type: ignore[union-attr]
    result = box.run("hogs = []\nwhile True:\n    hogs.append(bytearray(2**28))")
    assert result.memory_exceeded
    assert run_ok(box, "del hogs; 'freed'") == "'freed'"


def test_filling_the_disk_stops_at_the_file_size_limit(box: Sandbox) -> None:
    code = "with open('fill.bin', 'wb') as f:\n    while True:\n        f.write(b'0' * 2**20)"
    result = box.run(code)
    assert result.error is not None and "too large" in result.error.value.lower()
    assert (box.workdir / "fill.bin").stat().st_size <= CONFIG.limits.file_size_bytes
    (box.workdir / "fill.bin").unlink()
    assert run_ok(box, "'ok'") == "'ok'"


def test_a_gigabyte_of_stdout_is_cut_off(box: Sandbox) -> None:
    code = "import sys\nchunk = 'x' * 2**20 + '\\n'\nfor _ in range(1024):\n    sys.stdout.write(chunk)"
    result = box.run(code, timeout=20)
    assert result.output_truncated and len(result.stdout) == CONFIG.max_output_chars
    assert result.error is not None and result.error.name == "OutputLimitExceeded"
    assert result.overflow_files[0].stat().st_size < 2 * CONFIG.max_output_bytes
    assert run_ok(box, "'ok'") == "'ok'"


def test_loopback_server_is_unreachable_when_network_is_isolated(box: Sandbox) -> None:
    need(box.isolation.network, f"network isolation unavailable here: {box.isolation.level}")
    with listening_server() as (port, accepted):
        code = f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    'connected'\n"
        code += "except OSError as exc:\n    type(exc).__name__"
        value = run_ok(box, code)
        assert value != "'connected'"
        assert not accepted


def test_loopback_server_is_reachable_when_network_is_allowed() -> None:
    """The control experiment for the test above: the probe code does detect a connection."""
    with Sandbox(SandboxConfig(network="allow")) as open_box, listening_server() as (port, accepted):
        assert open_box.isolation.network is False
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5).close()\n'connected'"
        assert run_ok(open_box, code) == "'connected'"
        for _ in range(40):  # the server thread notices within its accept timeout
            if accepted:
                break
            time.sleep(0.05)
        assert accepted


def test_writes_outside_the_working_folder_are_refused(box: Sandbox, tmp_path: Path) -> None:
    need(box.isolation.writes, f"write confinement unavailable here: {box.isolation.level}")
    target = tmp_path / "escaped.txt"
    result = box.run(f"open({str(target)!r}, 'w').write('x')")
    assert result.error is not None and result.error.name == "PermissionError"
    assert not target.exists()
    assert run_ok(box, "open('inside.txt', 'w').write('x')") == "1"


def test_kernel_killing_itself_is_reported_and_restarted(box: Sandbox) -> None:
    result = box.run("import os\nos._exit(3)")
    assert result.killed and result.restarted
    assert any("exit status 3" in note for note in result.notes)
    assert run_ok(box, "1 + 1") == "2"


def test_ctypes_segfault_is_reported_and_restarted(box: Sandbox) -> None:
    result = box.run("import ctypes\nctypes.string_at(0)")
    assert result.killed and result.restarted
    assert any("SIGSEGV" in note for note in result.notes)
    assert run_ok(box, "1 + 1") == "2"


def test_background_processes_do_not_outlive_their_cell(box: Sandbox) -> None:
    result = box.run("import subprocess\np = subprocess.Popen(['sleep', '60'])\np.pid")
    assert any("child process" in note for note in result.notes)
    assert run_ok(box, "p.poll() is not None") == "True"


def test_host_secrets_cannot_be_read(box: Sandbox) -> None:
    need(box.isolation.reads, f"read confinement unavailable here: {box.isolation.level}")
    for code in ("open('/etc/shadow').read()", "import os; os.listdir('/root')", "open('/etc/hostname').read()"):
        result = box.run(code)
        assert result.error is not None and result.error.name == "PermissionError", (code, result.value)
    assert run_ok(box, "import numpy; int(numpy.arange(4).sum())") == "6"  # what it needs still loads


def test_a_user_file_outside_the_allow_list_cannot_be_read(box: Sandbox, tmp_path: Path) -> None:
    need(box.isolation.reads, f"read confinement unavailable here: {box.isolation.level}")
    private = tmp_path / "notes.txt"
    private.write_text(SECRET)
    private.chmod(0o644)  # readable by any uid: only the sandbox's rules stand in the way
    tmp_path.chmod(0o755)
    result = box.run(f"open({str(private)!r}).read()")
    assert result.error is not None and result.error.name == "PermissionError"
    assert SECRET not in (result.value or "") + result.stdout


def test_other_processes_are_invisible_in_proc(box: Sandbox) -> None:
    need(box.isolation.reads, f"read confinement unavailable here: {box.isolation.level}")
    env = {"PATH": os.defpath, "LLMOS_FAKE_API_KEY": SECRET}
    with subprocess.Popen(["sh", "-c", "sleep 30", SECRET], env=env) as host:  # a host process holding the secret
        try:
            for _ in range(100):  # until it has exec'd
                if SECRET in Path(f"/proc/{host.pid}/environ").read_text(errors="replace"):
                    break
                time.sleep(0.02)
            assert SECRET in Path(f"/proc/{host.pid}/environ").read_text(errors="replace")
            for name in ("environ", "cmdline"):
                result = box.run(f"open('/proc/{host.pid}/{name}', 'rb').read()")
                assert result.error is not None and result.error.name in ("FileNotFoundError", "PermissionError")
                assert SECRET not in (result.value or "")
        finally:
            host.kill()
    pids = run_ok(box, "import os; sorted(int(p) for p in os.listdir('/proc') if p.isdigit())")
    assert pids is not None and max(eval(pids)) < 100  # only the sandbox's own pid namespace


def test_code_runs_unprivileged_under_a_seccomp_filter(box: Sandbox) -> None:
    need(box.isolation.user and box.isolation.seccomp, f"layers missing here: {box.isolation.missing}")
    status = run_ok(box, "open('/proc/self/status').read()") or ""
    fields = dict(line.split(":", 1) for line in eval(status).splitlines() if ":" in line)
    assert fields["Uid"].split()[0] != "0" and int(fields["CapEff"], 16) == 0 and fields["Seccomp"].strip() == "2"
    code = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    code += "[(libc.ptrace(16, 1, 0, 0), ctypes.get_errno()), (libc.unshare(0x20000), ctypes.get_errno())]"
    assert run_ok(box, code) == "[(-1, 1), (-1, 1)]"  # EPERM, from the filter


def test_the_host_never_follows_a_link_the_kernel_planted(box: Sandbox, tmp_path: Path) -> None:
    from llmos_sandbox import documents

    target = tmp_path / "victim"
    target.mkdir()
    run_ok(
        box, f"import os, shutil\nshutil.rmtree('.llmos', ignore_errors=True)\nos.symlink({str(target)!r}, '.llmos')"
    )
    written = documents.write(box.workdir, {"https://example.com": "page"})
    assert list(target.iterdir()) == [] and not written.parent.is_symlink()
    assert documents.read_page(folder=box.workdir) == "page"


HANDED = "a document the user handed to the sandbox"


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A sandbox with a small quota, and one file handed to it."""
    handed = tmp_path_factory.mktemp("handed") / "report.txt"
    handed.write_text(HANDED)
    limits = replace(CONFIG.limits, disk_files=2_000, disk_bytes=12 * 2**20)
    with Sandbox(replace(CONFIG, limits=limits, read_paths=(str(handed),))) as sandbox:
        sandbox.handed = handed  # type: ignore[attr-defined]
        yield sandbox


def test_files_handed_to_the_sandbox_are_readable(small: Sandbox) -> None:
    handed = small.handed  # type: ignore[attr-defined]
    assert run_ok(small, f"open({str(handed)!r}).read()") == repr(HANDED)
    result = small.run(f"open({str(handed)!r}, 'a').write('x')")
    assert result.error is not None and result.error.name == "PermissionError"  # read-only
    assert handed.read_text() == HANDED


def test_two_hundred_thousand_small_files_stop_at_the_quota(small: Sandbox) -> None:
    need(small.isolation.quota, f"no disk quota on this host: {small.isolation.level}")
    code = "import os\nos.mkdir('many')\nfor n in range(200_000):\n    open(f'many/{n}', 'w').close()"
    started = time.monotonic()
    result = small.run(code, timeout=20)
    assert time.monotonic() - started < 10 and not result.timed_out
    assert result.error is not None and "No space left on device" in result.error.value
    assert any("folder is full" in note and "2,000 files" in note for note in result.notes)
    assert len(os.listdir(small.workdir / "many")) < 2_000
    assert run_ok(small, "import shutil; shutil.rmtree('many'); open('after.txt', 'w').write('ok')") == "2"


def test_bytes_across_many_files_stop_at_the_quota(small: Sandbox) -> None:
    need(small.isolation.quota, f"no disk quota on this host: {small.isolation.level}")
    code = "for n in range(4):\n    open(f'big{n}.bin', 'wb').write(b'0' * (6 * 2**20))"  # each under the file limit
    result = small.run(code)
    assert result.error is not None and "No space left on device" in result.error.value
    used = sum(p.stat().st_size for p in small.workdir.glob("big*.bin"))
    assert used <= 12 * 2**20
    assert run_ok(small, "import glob, os\nfor p in glob.glob('big*.bin'): os.remove(p)\n'freed'") == "'freed'"


# --- the pool ----------------------------------------------------------------------------


def test_pool_serves_warm_sandboxes_one_per_session() -> None:
    with SandboxPool(SandboxConfig(), size=1) as pool:
        assert pool.wait_ready(60)
        first = pool.for_session("a")
        assert pool.for_session("a") is first
        second = pool.for_session("b")
        assert second is not first and second.workdir != first.workdir
        first.run("x = 'a'")
        assert second.run("'x' in dir()").value == "False"
        pool.end_session("a")
        assert first.closed and not first.root.exists()


# --- helpers -----------------------------------------------------------------------------


class listening_server:
    """A TCP server on loopback that records whether anyone connected."""

    def __enter__(self) -> tuple[int, list[bool]]:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.accepted: list[bool] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        return self.sock.getsockname()[1], self.accepted

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.sock.accept()
                self.accepted.append(True)
                connection.close()
            except OSError:
                continue

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        self.sock.close()
