"""llmos-notes: an example llmos plugin.

* ``word_count``: a plain typed function with a docstring becomes a tool (read-only).
* ``Notes``: a :class:`~llmos_tools.Toolbox` whose ``@tool`` methods share one
  notebook file; ``notes_add`` writes (``Effect.WRITES``), ``notes_search`` only reads.

The notebook lives at ``$LLMOS_NOTES`` or ``$LLMOS_HOME/notes.jsonl``. Heavy imports
would go inside the tool functions, so importing the plugin stays cheap.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from llmos_tools import Effect, Toolbox, ToolError, hookimpl, tool

LLMOS_CACHE_TOOLS = True  # the default: these tools depend on this code only, so llmos may cache their specs


@tool
def word_count(text: str) -> str:
    """Count the words in a text.

    Args:
        text: the text to count
    """
    return str(len(text.split()))


class Notes(Toolbox):
    """A notebook kept as one JSON line per note."""

    prefix = "notes_"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @tool(effects={Effect.WRITES})
    def add(self, text: str, tags: list[str] | None = None) -> str:
        """Add a note to the notebook.

        Args:
            text: what to remember
            tags: optional labels to find it by
        """
        if not text.strip():
            raise ToolError("text must not be empty")  # the model's mistake: it reads this and retries
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as file:
            file.write(json.dumps({"text": text, "tags": tags or []}) + "\n")
        return f"noted ({self._count()} notes)"

    @tool
    def search(self, query: str, limit: int = 5) -> str:
        """Find notes whose text or tags contain the query (case-insensitive).

        Args:
            query: the words to look for
            limit: at most this many notes
        """
        wanted = query.lower()
        found = [n for n in self._notes() if wanted in n["text"].lower() or wanted in map(str.lower, n["tags"])]
        return "\n".join(f"- {n['text']}" for n in found[:limit]) or "no matching notes"

    def _notes(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def _count(self) -> int:
        return len(self._notes())


def notebook_path() -> Path:
    home = os.environ.get("LLMOS_HOME") or "~/.local/share/llmos"
    return Path(os.environ.get("LLMOS_NOTES") or Path(home) / "notes.jsonl").expanduser()


@hookimpl
def register_tools(register):
    register(word_count)
    register(Notes(notebook_path()))
