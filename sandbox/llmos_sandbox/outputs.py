"""What one cell gives back (:class:`CellResult`), and the capped collector that builds it.

Contract: a :class:`Capture` keeps at most ``max_output_chars`` of each stream in the
result, writes the whole stream into ``spill_dir/cell-N-stdout.txt`` once it overflows
(up to ``max_output_bytes``), keeps at most ``max_rich_outputs`` rich outputs, and
reports ``over_limit`` once a cell has sent more than ``max_output_bytes`` in all.
Rich data stays as the kernel sent it (JSON text; images base64). Not covered:
talking to the kernel (:mod:`llmos_sandbox.kernel`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol


class OutputLimits(Protocol):
    @property
    def max_output_chars(self) -> int: ...
    @property
    def max_output_bytes(self) -> int: ...
    @property
    def max_rich_outputs(self) -> int: ...


@dataclass
class KernelError:
    name: str
    value: str
    traceback: list[str]

    def last_lines(self, count: int = 8) -> str:
        """The end of the traceback, without IPython's separator lines."""
        lines = [line for line in "\n".join(self.traceback).splitlines() if line.strip("-")]
        return "\n".join(lines[-count:])


@dataclass
class Output:
    """A rich output: ``kind`` is ``execute_result`` or ``display_data``; ``data`` maps mime to text."""

    kind: str
    data: dict[str, str]


@dataclass
class CellResult:
    stdout: str = ""
    stderr: str = ""
    outputs: list[Output] = field(default_factory=list)
    error: KernelError | None = None
    execution_count: int | None = None
    timed_out: bool = False
    memory_exceeded: bool = False
    killed: bool = False
    restarted: bool = False
    output_truncated: bool = False
    overflow_files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the sandbox did, in words for the model
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and not (self.timed_out or self.killed)

    @property
    def value(self) -> str | None:
        """The ``text/plain`` repr of the cell's last expression, if it had one."""
        for output in self.outputs:
            if output.kind == "execute_result":
                return output.data.get("text/plain")
        return None


class Capture:
    """Collects one cell's output within the caps, spilling streams into files."""

    def __init__(self, limits: OutputLimits, spill_dir: Path, cell: int) -> None:
        self.config = limits
        self.spill_dir = spill_dir
        self.cell = cell
        self.kept: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.kept_chars = {"stdout": 0, "stderr": 0}
        self.spill: dict[str, IO[str]] = {}
        self.total_bytes = 0
        self.result = CellResult()

    @property
    def over_limit(self) -> bool:
        return self.total_bytes > self.config.max_output_bytes

    def stream(self, name: str, text: str) -> None:
        name = name if name in self.kept else "stderr"
        self.total_bytes += len(text)
        room = self.config.max_output_chars - self.kept_chars[name]
        if room > 0:
            self.kept[name].append(text[:room])
            self.kept_chars[name] += min(room, len(text))
        if len(text) > room:
            self.result.output_truncated = True
            self._spill(name, text[max(room, 0) :])

    def _spill(self, name: str, rest: str) -> None:
        """Keep what did not fit in a file, which holds the whole stream."""
        if name not in self.spill:
            self.spill_dir.mkdir(exist_ok=True)
            path = self.spill_dir / f"cell-{self.cell}-{name}.txt"
            self.spill[name] = path.open("w", encoding="utf-8", errors="replace")
            self.result.overflow_files.append(path)
            self.spill[name].write("".join(self.kept[name]))
        if self.spill[name].tell() < self.config.max_output_bytes:
            self.spill[name].write(rest)

    def rich(self, kind: str, data: dict[str, Any]) -> None:
        size = sum(len(v) if isinstance(v, str) else len(json.dumps(v)) for v in data.values())
        self.total_bytes += size
        if len(self.result.outputs) >= self.config.max_rich_outputs or self.over_limit:
            self.result.output_truncated = True
            return
        texts = {mime: v if isinstance(v, str) else json.dumps(v) for mime, v in data.items()}
        self.result.outputs.append(Output(kind, texts))

    def finish(self) -> CellResult:
        for handle in self.spill.values():
            handle.close()
        for name in ("stdout", "stderr"):
            setattr(self.result, name, "".join(self.kept[name]))
        return self.result
