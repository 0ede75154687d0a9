"""Public test helpers for llmos and its plugin authors.

* :func:`write_tiny_gguf` writes a real GGUF model (llama architecture, tiny
  random weights) whose vocabulary holds the given special tokens as control
  tokens, so dialects run through real llama.cpp with real special tokens. Its
  output is noise; it is for plumbing, never for quality.
* :class:`ScriptedCPU` replays fixed model outputs through the kernel: the way to
  test a tool or a policy without a model. It is a text-only backend, exactly
  like an HTTP server would be.
* :class:`LocalServer` / :func:`local_server` run ``python -m MODULE ARGS`` (a
  ``llama_cpp.server``, or ``llmos.testing serve``: the same with llmos's load options)
  on a free loopback port and wait until it answers ``/v1/models``; a server that exits
  or stays silent raises :class:`RuntimeError` with the end of its log.

Needs the ``gguf`` and ``numpy`` packages for :func:`write_tiny_gguf` only.
"""

from __future__ import annotations

import contextlib
import re
import socket
import string
import subprocess
import sys
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos.cpu.base import Counters, CPUError, Piece, Sampling, Segment

CONTROL, NORMAL, UNKNOWN, BYTE = 3, 1, 2, 6  # llama.cpp token types


def tiny_vocabulary(special_tokens: Sequence[str]) -> tuple[list[str], list[int]]:
    """An SPM vocabulary: unk, bos, eos, 256 byte tokens, printable ASCII, then the specials."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [UNKNOWN, CONTROL, CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [BYTE] * 256
    chars = ["\u2581"] + [c for c in string.printable if c not in " \t\n\r\x0b\x0c"]
    tokens += chars
    types += [NORMAL] * len(chars)
    tokens += list(special_tokens)
    types += [CONTROL] * len(special_tokens)
    return tokens, types


def write_tiny_gguf(
    path: str | Path,
    special_tokens: Sequence[str],
    *,
    n_embd: int = 32,
    n_layer: int = 2,
    n_head: int = 4,
    n_ff: int = 64,
    n_ctx: int = 2048,
    seed: int = 0,
    chat_template: str | None = None,
) -> Path:
    """Write a random-weight llama GGUF with ``special_tokens`` as control tokens."""
    import gguf
    import numpy as np

    path = Path(path)
    tokens, types = tiny_vocabulary(special_tokens)
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("llmos-test-tiny")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(False)
    if chat_template:
        writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", weight(len(tokens), n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", weight(len(tokens), n_embd))
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", weight(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(n_embd, n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def scripted_llama(model_path: str | Path, outputs: Sequence[str], **options: object):
    """A real :class:`~llmos.cpu.llama.LlamaCPU` whose "generated" text is scripted.

    Each :meth:`generate` call emits the next output's tokens (special tokens parsed,
    so ``<|call|>`` is the control token) as if the model had sampled them: the KV
    cache, prefill, paging and counters are all real; only the choice of tokens is not.
    """
    from llmos.cpu.llama import LlamaCPU

    class ScriptedLlamaCPU(LlamaCPU):
        def generate(self, sampling: Sampling) -> Generator[Piece, None, None]:
            if not script:
                raise CPUError("the scripted model has no more outputs")
            self._evaluate_pending()
            for token in self.tokenize(script.pop(0), special=True)[: sampling.max_tokens]:
                self.counters.tokens_sampled += 1
                self.counters.context_tokens += 1
                self.tokens.append(token)
                control = self.is_control(token)
                yield Piece(token, self.piece(token).decode("utf-8", "replace"), control)
                self._evaluate_pending()

    script = list(outputs)
    return ScriptedLlamaCPU(model_path, **options)  # type: ignore[arg-type]


def scripted_call(name: str, **arguments: object) -> str:
    """A call as a model speaking the llmos dialect writes it: one generation of a :class:`ScriptedCPU` script."""
    import json

    from llmos.dialects.llmos import CALL, CALL_END

    return f"{CALL}{json.dumps({'name': name, 'arguments': arguments})}{CALL_END}"


class ScriptedCPU:
    """A text-only CPU that answers each :meth:`generate` with the next scripted output.

    The script's strings are what the model "writes", markers included. Running out
    of script raises :class:`CPUError`, so a test never loops forever.
    """

    name = "scripted"

    def __init__(self, outputs: Sequence[str], n_ctx: int = 1_000_000, piece_size: int = 3) -> None:
        self.outputs = list(outputs)
        self.n_ctx = n_ctx
        self.piece_size = piece_size
        self.counters = Counters()
        self.loads: list[list[Segment]] = []

    def load(self, segments: Sequence[Segment]) -> None:
        size = sum(self.count_tokens(s.text) for s in segments)
        if size > self.n_ctx:
            from llmos.cpu.base import ContextOverflow

            raise ContextOverflow(f"context of {size} tokens exceeds the window of {self.n_ctx}")
        self.loads.append(list(segments))

    def count_tokens(self, text: str, trusted: bool = False) -> int:
        return max(1, len(text) // 4)

    def generate(self, sampling: Sampling) -> Generator[Piece, None, None]:
        if not self.outputs:
            raise CPUError("the scripted model has no more outputs")
        text = self.outputs.pop(0)
        for start in range(0, min(len(text), sampling.max_tokens * self.piece_size), self.piece_size):
            self.counters.tokens_sampled += 1
            yield Piece(None, text[start : start + self.piece_size])

    def close(self) -> None:
        pass


@contextlib.contextmanager
def llama_defaults_like_llmos() -> Iterator[None]:
    """Make llama-cpp-python's own ``Llama`` load weights as :class:`~llmos.cpu.llama.LlamaCPU` does.

    Its model parameters come from ``llama_model_default_params`` and no argument reaches
    ``use_extra_bufts``, so the defaults are wrapped for the duration (see
    :func:`llmos.cpu.llama.extra_buffers_safe`: AMX builds crash on Q4_1 otherwise).
    """
    import llama_cpp.llama_cpp as raw

    from llmos.cpu.llama import extra_buffers_safe

    default = raw.llama_model_default_params

    def params():
        value = default()
        value.use_extra_bufts = extra_buffers_safe()
        return value

    raw.llama_model_default_params = params
    try:
        yield
    finally:
        raw.llama_model_default_params = default


def plain_llama(model_path: str | Path, **options: object):
    """llama-cpp-python's own ``Llama`` on a model: the baseline tests and benchmarks compare llmos with.
    Its evaluations run on llmos's compute thread (:func:`on_compute_thread`)."""
    from llama_cpp import Llama

    with llama_defaults_like_llmos():
        return on_compute_thread(Llama(str(model_path), verbose=False, **options))  # type: ignore[arg-type]


def on_compute_thread(llama: Any) -> Any:
    """``llama`` (llama-cpp-python's ``Llama``) with its ``eval``, and so its generation, on llmos's
    compute thread (:mod:`llmos.cpu.compute`): a baseline that decodes in another thread beside
    llmos would keep a second OpenMP team, and the two throttle each other."""
    from llmos.cpu import compute

    evaluate = llama.eval
    llama.eval = lambda tokens: compute.run(evaluate, tokens)
    return llama


def llama_logits(
    model_path: str | Path, text: str, lora: str | Path | None = None, n_ctx: int = 1024, flash_attn: bool = False
):
    """llama.cpp's next-token logits (float32, one row per token) at every position of ``text``
    (special tokens parsed), with the LoRA GGUF ``lora`` applied at run time when given, and
    llama.cpp's flash attention when ``flash_attn``."""
    import numpy as np

    options: dict[str, object] = {"lora_path": str(lora)} if lora else {}
    options["flash_attn"] = flash_attn
    llama = plain_llama(model_path, n_ctx=n_ctx, logits_all=True, n_threads=2, **options)
    try:
        tokens = llama.tokenize(text.encode(), add_bos=False, special=True)
        llama.eval(tokens)
        return tokens, np.array(llama.scores[: len(tokens)], dtype=np.float32)
    finally:
        llama.close()


def run_llama_server(argv: Sequence[str]) -> None:
    """``python -m llama_cpp.server ARGS`` with the weights loaded as llmos loads them (tests serve SmolLM2 so)."""
    import sys

    from llama_cpp.server.__main__ import main

    sys.argv = ["llama_cpp.server", *argv]
    with llama_defaults_like_llmos():
        main()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LocalServer:
    """An HTTP server process on loopback (``python -m MODULE ARGS --host 127.0.0.1 --port P``)."""

    url: str
    log: Path
    process: subprocess.Popen[bytes]

    @classmethod
    def start(cls, module_and_args: Sequence[str], log: Path) -> LocalServer:
        """Start it (its output goes to ``log``); :meth:`wait_ready` before use."""
        port = free_port()
        command = [sys.executable, "-m", *module_and_args, "--host", "127.0.0.1", "--port", str(port)]
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        return cls(f"http://127.0.0.1:{port}", log, process)

    def wait_ready(self, seconds: float = 120) -> None:
        import httpx

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.url}: the server exited with {self.process.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.url}: the server did not answer within {seconds:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def log_size(self) -> int:
        return self.log.stat().st_size

    def log_since(self, offset: int) -> str:
        return self.log.read_bytes()[offset:].decode("utf-8", "replace")

    def peak_rss_mb(self) -> int:
        """The process's peak resident memory so far (Linux ``VmHWM``), in MiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        found = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(found[1]) // 1024 if found else 0


@contextlib.contextmanager
def local_server(module_and_args: Sequence[str], log: Path, seconds: float = 120) -> Iterator[LocalServer]:
    """A :class:`LocalServer`, ready, stopped when the block ends."""
    server = LocalServer.start(module_and_args, log)
    try:
        server.wait_ready(seconds)
        yield server
    finally:
        server.stop()


if __name__ == "__main__":  # python -m llmos.testing serve ARGS: a llama_cpp.server for tests on loopback
    import sys

    if sys.argv[1:2] != ["serve"]:
        raise SystemExit("usage: python -m llmos.testing serve LLAMA_CPP_SERVER_ARGS")
    run_llama_server(sys.argv[2:])
