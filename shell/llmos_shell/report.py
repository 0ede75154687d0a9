"""Run reports: ``report.md`` and a self-contained ``report.html`` from a finished run.

Contract
--------
* :func:`write_reports` takes a :class:`RunRecord` (what the runner knows at the end) and writes
  both files into the run folder.
* ``report.html`` loads nothing from anywhere: no scripts, no external styles; images are the
  run's own artifacts and a timing plot, inlined as base64 ``data:`` URIs; a
  Content-Security-Policy that allows only ``data:`` images backs this up.
* Model text is untrusted. In HTML it is rendered from Markdown with raw HTML escaped, and every
  link and image the model wrote is shown as text (its label and its URL), never as ``<a href>``
  or ``<img src>``: a markdown image is the classic way to exfiltrate data to a URL.
  In ``report.md`` model text goes inside a fenced block, so a Markdown viewer renders none of it.
  The text goes through :func:`llmos.policy.render.render_safe` first (the TUI uses it too).
* Every tool call lists the policy's decision (allow, ask and whether it was approved, deny)
  and every reason the policy gave (the rules that fired, the context, each argument's
  provenance), in a fenced block in ``report.md`` and escaped in ``report.html``: reasons
  quote arguments the model wrote. A call the kernel refused before the policy (a malformed
  call, an unknown tool) says so.

Not covered: charts beyond tool timings, diffing two runs.
"""

from __future__ import annotations

import base64
import html
import json
import mimetypes
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos.policy.render import render_safe

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}


@dataclass
class RunRecord:
    title: str
    prompt: str
    model: str
    session_id: str
    status: str  # answer | budget | error | checks_failed
    exit_code: int
    answer: str
    folder: Path
    seconds: float = 0.0
    steps: int = 0
    counters: dict[str, float] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)  # {"check", "passed", "detail"}
    events: list[dict[str, Any]] = field(default_factory=list)  # event dicts, tokens excluded

    @property
    def artifacts(self) -> list[Path]:
        folder = self.folder / "artifacts"
        return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def write_reports(record: RunRecord) -> None:
    (record.folder / "report.md").write_text(markdown_report(record), encoding="utf-8")
    (record.folder / "report.html").write_text(html_report(record), encoding="utf-8")


# -- report.md ---------------------------------------------------------------------------


def fenced(text: str, info: str = "text") -> str:
    """A fenced block longer than any backtick run inside, so the text cannot close it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def markdown_report(record: RunRecord) -> str:
    lines = [
        f"# {record.title}",
        "",
        f"- status: **{record.status}** (exit code {record.exit_code})",
        f"- model: `{record.model}`",
        f"- session: `{record.session_id}`",
        f"- time: {record.seconds:.1f} s, tool calls: {record.steps}, "
        f"tokens generated: {int(record.counters.get('tokens_sampled', 0))}",
        "",
        "## Prompt",
        "",
        fenced(record.prompt),
        "",
        "## Answer",
        "",
        fenced(record.answer or "(no answer)", "markdown"),
        "",
    ]
    if record.checks:
        lines += ["## Checks", "", "| check | result | detail |", "|---|---|---|"]
        for check in record.checks:
            mark = "pass" if check["passed"] else "FAIL"
            lines.append(f"| `{_cell(check['check'])}` | {mark} | {_cell(check['detail'])} |")
        lines.append("")
    calls = [e for e in record.events if e["kind"] == "result"]
    decisions = policy_decisions(record)
    if calls:
        lines += ["## Tool calls", ""]
        for result in calls:
            status = "error" if result["is_error"] else "ok"
            decision = decisions.get(result["id"])
            lines += [f"### {_cell(result['name'])} ({status}, {result['seconds']:.2f} s)", ""]
            lines += [f"- policy: **{decision_label(decision)}**", ""]
            if decision is not None:
                lines += [fenced("\n".join(decision["reasons"])), ""]
            lines += [fenced(result["text"]), ""]
    if record.artifacts:
        lines += ["## Artifacts", ""]
        lines += [f"- `{p.relative_to(record.folder)}`" for p in record.artifacts]
        lines.append("")
    return "\n".join(lines)


def policy_decisions(record: RunRecord) -> dict[str, dict[str, Any]]:
    """Each call's policy event, by call id."""
    return {e["id"]: e for e in record.events if e["kind"] == "policy"}


def decision_label(decision: dict[str, Any] | None) -> str:
    """``allow``, ``deny``, ``ask: approved`` / ``ask: not approved``, or why there was none."""
    if decision is None:
        return "none (the call never reached the policy: malformed, or no such tool)"
    if decision["decision"] == "ask":
        return f"ask: {'approved' if decision.get('approved') else 'not approved'}"
    return str(decision["decision"])


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").replace("`", "'")


# -- safe Markdown -----------------------------------------------------------------------


def render_untrusted_markdown(text: str) -> str:
    """HTML for model-written Markdown: raw HTML escaped, links and images shown as text."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False})

    def image(renderer: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        token = tokens[idx]
        alt = "".join(child.content for child in token.children or [])
        src = token.attrGet("src") or ""
        return f'<span class="ref">[image: {html.escape(alt)} · {html.escape(str(src))}]</span>'

    def link_open(renderer: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        return '<span class="ref">'

    def link_close(renderer: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        opener = next(t for t in reversed(tokens[:idx]) if t.type == "link_open")
        href = opener.attrGet("href") or ""
        return f" · {html.escape(str(href))}</span>"

    md.add_render_rule("image", image)
    md.add_render_rule("link_open", link_open)
    md.add_render_rule("link_close", link_close)
    # render_safe already turned links, images and tags into text; the rules above are the second lock.
    return md.render(render_safe(text))


# -- report.html -------------------------------------------------------------------------

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
pre { background: #f4f4f4; padding: .6rem; overflow-x: auto; white-space: pre-wrap; }
.ref { background: #fff3cd; font-family: monospace; font-size: 90%; }
.pass { color: #176117; } .fail { color: #b00020; font-weight: bold; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: .2rem .5rem; text-align: left; }
details { margin: .4rem 0; } summary { cursor: pointer; }
.answer { border-left: 4px solid #4a7; padding-left: 1rem; }
img.artifact { max-width: 100%; border: 1px solid #ddd; }
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def html_report(record: RunRecord) -> str:
    e = html.escape
    status_class = "pass" if record.exit_code == 0 else "fail"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{e(record.title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(record.title)}</h1>",
        f'<p class="{status_class}">{e(record.status)} (exit code {record.exit_code})</p>',
        "<table>",
        *(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in _facts(record).items()),
        "</table>",
        "<h2>Prompt</h2>",
        f"<pre>{e(record.prompt)}</pre>",
        "<h2>Answer</h2>",
        f'<div class="answer">{render_untrusted_markdown(record.answer or "(no answer)")}</div>',
    ]
    parts += _checks_html(record)
    parts += _calls_html(record)
    parts += _artifacts_html(record)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _facts(record: RunRecord) -> dict[str, Any]:
    counters = record.counters
    return {
        "model": record.model,
        "session": record.session_id,
        "seconds": f"{record.seconds:.1f}",
        "tool calls": record.steps,
        "tokens generated": int(counters.get("tokens_sampled", 0)),
        "recompute ratio": counters.get("recompute_ratio", ""),
    }


def _checks_html(record: RunRecord) -> list[str]:
    if not record.checks:
        return []
    rows = [
        f"<tr><td><code>{html.escape(c['check'])}</code></td>"
        f'<td class="{"pass" if c["passed"] else "fail"}">{"pass" if c["passed"] else "FAIL"}</td>'
        f"<td>{html.escape(c['detail'])}</td></tr>"
        for c in record.checks
    ]
    return ["<h2>Checks</h2>", "<table><tr><th>check</th><th>result</th><th>detail</th></tr>", *rows, "</table>"]


def _calls_html(record: RunRecord) -> list[str]:
    calls = {e["id"]: e for e in record.events if e["kind"] == "call"}
    results = [e for e in record.events if e["kind"] == "result"]
    if not results:
        return []
    parts = ["<h2>Tool calls</h2>"]
    plot = timing_plot(results)
    if plot:
        parts.append(f'<img alt="seconds per tool call" src="{plot}">')
    decisions = policy_decisions(record)
    for result in results:
        arguments = calls.get(result["id"], {}).get("arguments", {})
        decision = decisions.get(result["id"])
        label = decision_label(decision)
        summary = f"{result['name']} · {'error' if result['is_error'] else 'ok'} · {result['seconds']:.2f} s · {label}"
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in (decision or {}).get("reasons", []))
        parts += [
            f"<details><summary>{html.escape(summary)}</summary>",
            f"<pre>{html.escape(json.dumps(arguments, ensure_ascii=False, indent=2))}</pre>",
            f'<p>policy: <strong>{html.escape(label)}</strong></p><ul class="reasons">{reasons}</ul>',
            f"<pre>{html.escape(result['text'])}</pre></details>",
        ]
    return parts


def _artifacts_html(record: RunRecord) -> list[str]:
    if not record.artifacts:
        return []
    parts = ["<h2>Artifacts</h2>"]
    for path in record.artifacts:
        name = html.escape(str(path.relative_to(record.folder)))
        parts.append(f"<p><code>{name}</code></p>")
        if path.suffix.lower() in IMAGE_SUFFIXES and path.stat().st_size < 20_000_000:
            parts.append(f'<img class="artifact" alt="{name}" src="{data_uri(path)}">')
    return parts


def data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def timing_plot(results: list[dict[str, Any]]) -> str:
    """A small SVG bar chart of seconds per tool call, as a data URI (no plotting library needed)."""
    if not results:
        return ""
    width, bar, gap, label = 520, 16, 6, 140
    longest = max(r["seconds"] for r in results) or 1.0
    rows = []
    for i, result in enumerate(results):
        y = i * (bar + gap)
        length = max(1.0, (width - label - 60) * result["seconds"] / longest)
        color = "#b00020" if result["is_error"] else "#4a7"
        rows.append(
            f'<text x="0" y="{y + 12}" font-size="11">{html.escape(result["name"])[:20]}</text>'
            f'<rect x="{label}" y="{y}" width="{length:.1f}" height="{bar}" fill="{color}"/>'
            f'<text x="{label + length + 4:.1f}" y="{y + 12}" font-size="11">{result["seconds"]:.2f} s</text>'
        )
    height = len(results) * (bar + gap)
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">'
        + "".join(rows)
        + "</svg>"
    )
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
