"""How well the default model (llmos-smol) does its job: held-out tasks through the real kernel, model and apps.

Every task runs as ``llmos run`` would run it (:func:`llmos_shell.runner.run_task`): the GGUF through
llama.cpp, greedy decoding, the real calculator, browser (archive mode, on invented web sites
written for this run), and Jupyter sandbox. Seeds differ from training, so names, numbers and
companies are new (phrasings come from the same templates).

* calculator tasks: ``call_valid`` (every call the model wrote parses), ``right_tool`` (its first
  call is the calculator), ``args_right`` (the expression gives the reference value),
  ``answer_right`` (the answer contains the calculator's result);
* ``malformed_why``: why the calls that ``call_valid`` counts as not parsing do not: ``loop`` (the
  kernel's loop guard stopped a call repeating one unit), ``cut`` (a budget stopped the turn inside
  the call, as the kernel's observation says) or ``invalid``;
* lookup tasks (search, open, answer): the first call is ``search`` with the subject, the open
  call names the right page, the answer contains the page's figure;
* ``valuation_success``: the demo's task on invented companies; success is the demo's own check
  (``examples/valuation/reference.py`` ``validate_run``: the CSV's rounds and amounts, imputed
  valuations within 1% of the ratio method, a real plot, the report embeds it);
  ``valuation_by_pairs`` tallies successes by the ratio's number of terms (each company's record
  has its ``pairs`` and the ``expression`` the model typed), and
  ``valuation_broke_at`` counts the step where each failing company went wrong first (the
  ``ratio`` step is judged from the first calculator call itself: its value within 1% of the
  reference's mean ratio, so a broken python cell no longer hides a wrong ratio);
* ``demo``: the same on the three real companies of ``examples/web`` (never trained on).
* ``held_out_layout_ratio``: the mean valuation/amount ratio asked of invented companies whose
  funding page is in a layout family held out of llmos-smol's training (``smol_data.HELD_OUT_LAYOUTS``:
  prose, figures in several currencies and styles); right when the first calculator call gives the
  reference value within 1% and the answer states it. (The full valuation task needs a page table for
  its reference check, so ``valuation_success`` stays on the demo's table layout.)
* ``chat_no_call``: the share of the plain chat prompts of ``benchmarks/data/chat_prompts.txt``
  (greetings, advice, definitions, short writing; held out of every curriculum) answered with
  no tool call in a turn that ends with a non-empty answer, every tool offered.

Usage: ``python benchmarks/tiny_eval.py [MODEL] [--n 40] [--companies 20] [--chat 50] [--layouts 10]
[--chat-prompts FILE] [--dry-multiplier X [--dry-allowed-length N]] [--no-call-grammar] [--json]``
(MODEL: a GGUF path or a model name such as ``smollm2`` or ``llmos-tiny``; default ``default``, what
``llmos run`` opens: llmos-smol unless ``$LLMOS_MODEL`` says otherwise). Decoding is the model's own
(greedy, or a fine-tune's settings: ``llmos.models.FineTune.sampling``); ``--dry-multiplier`` and
``--dry-allowed-length`` set llama.cpp's DRY repetition penalty over it in every run
(``report["sampling"]`` says what was used). Calls are decoded under the dialect's lazy call grammar
(``Sampling.constrain_calls``) unless ``--no-call-grammar`` is given.
``--chat-prompts benchmarks/data/chat_dev_prompts.txt`` scores plain chat on prompts for tuning
decoding, in neither the curriculum nor the held-out file.
Targets are issue 25's (``TARGETS``).
Not covered: sampling with temperature, the recall and imagegen tasks, tasks in other phrasings.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import random
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from llmos_tiny import curriculum, smol_data
from llmos_tiny.world import World, all_tool_names

from llmos.dialects import llmos as llmos_dialect
from llmos.dialects import smol as smol_dialect
from llmos.dialects.base import CallSyntaxError
from llmos.models import model_sampling, resolve_spec

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"call_valid": 0.99, "right_tool": 0.97, "args_right": 0.95, "answer_right": 0.95, "valuation_success": 0.90}
LAYOUT_TARGET = 0.90  # issue 25: valuation work on held-out companies in held-out layouts
CHAT_TARGET = 0.95  # issue 25: plain chat answered without a call, in a turn that ends
SAMPLING: dict[str, Any] = {}  # fields set over the model's own decoding in every run (main sets them)
CHAT_PROMPTS = Path(__file__).with_name("data") / "chat_prompts.txt"
SEED = 424_242  # training uses seeds 0 and 1,000,003
# the demo's method, call by call: llmos-tiny's, and llmos-smol's (python reads the table for the calculator)
METHODS = (("search", "open", "calculator", "python"), ("search", "open", "python", "calculator", "python"))


def _reference():
    spec = importlib.util.spec_from_file_location("valuation_reference", ROOT / "examples/valuation/reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# A call's opening and end markers in either dialect the evaluated models speak.
CALL_OPENS = "|".join(re.escape(d.CALL) for d in (llmos_dialect, smol_dialect))
CALL_ENDS = "|".join(re.escape(d.CALL_END) for d in (llmos_dialect, smol_dialect))


def _call_bodies(transcript: dict) -> list[tuple[str, bool, str]]:
    """Each call's body as the model wrote it, whether its end marker follows, and the result
    turn after it (the kernel's observation; ``""`` when the run ended there)."""
    pattern = re.compile(f"(?:{CALL_OPENS})(.*?)(?:({CALL_ENDS})|$)", re.S)
    turns = transcript["turns"]
    found = []
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        after = turns[i + 1]["text"] if i + 1 < len(turns) and turns[i + 1]["role"] == "result" else ""
        found += [(match.group(1), match.group(2) is not None, after) for match in pattern.finditer(turn["text"])]
    return found


def calls_in(transcript: dict) -> list[tuple[str, dict] | None]:
    """Every call the model wrote, parsed (``None`` where it does not parse)."""
    found: list[tuple[str, dict] | None] = []
    for body, _, _ in _call_bodies(transcript):
        try:
            call = llmos_dialect.LlmosDialect().parse(body)  # one JSON object in either dialect
            found.append((call.name, call.arguments))
        except CallSyntaxError:
            found.append(None)
    return found


def malformed_why(transcript: dict) -> list[str]:
    """Why each call that does not parse does not: ``loop`` (the kernel's loop guard stopped it
    repeating one unit), ``cut`` (no end marker, and the kernel said the call was cut off, or the
    run ended there: a budget stopped it) or ``invalid`` (anything else: ended but not a call, or
    broken by a marker the model wrote inside it)."""
    why = []
    for body, ended, after in _call_bodies(transcript):
        try:
            llmos_dialect.LlmosDialect().parse(body)
        except CallSyntaxError:
            looped = not ended and "the call was stopped: it repeated" in after
            cut = not ended and (not after or "the call was cut off" in after)
            why.append("loop" if looped else "cut" if cut else "invalid")
    return why


def run(task_kwargs: dict, model: str, out: Path):
    from llmos_shell import runner
    from llmos_shell.task import Task, TaskBudgets, TaskSampling

    budgets = TaskBudgets(steps=8, tokens=4096, seconds=300, step_tokens=1536)
    task = Task(model=model, n_ctx=8192, budgets=budgets, sampling=TaskSampling(**SAMPLING), **task_kwargs)
    result = runner.run_task(task, runner.RunOptions(out=out, store=out.parent / "sessions.db"))
    transcript = json.loads((out / "transcript.json").read_text())
    return result, transcript


def score_chat_task(kind: str, rng: random.Random, world: World, model: str, out: Path) -> dict:
    turns = curriculum.arithmetic(rng, world) if kind == "calculator" else curriculum.lookup(rng, world)
    world.publish()
    question, reference_calls = turns[0].text, [c for c in calls_in(_as_transcript(turns)) if c]
    tools = all_tool_names()
    result, transcript = run({"prompt": question, "tools": tools, "web": f"archive:{world.root}"}, model, out)
    calls = calls_in(transcript)
    answer = result.answer or ""
    if kind == "calculator":
        from llmos_apps.calculator import calculator

        expected = calculator(reference_calls[0][1]["expression"])
        args_right = bool(calls and calls[0] and calls[0][0] == "calculator" and _value(calls[0][1]) == expected)
        answer_right = expected in answer
    else:
        want = {name: args for name, args in reference_calls}
        got = {c[0]: c[1] for c in calls if c}
        args_right = got.get("search") == want["search"] and got.get("open", {}).get("url") == want["open"]["url"]
        figure = re.search(r"\d[\d,]*", re.sub(r"https?://\S+", "", turns[-1].text))
        answer_right = bool(figure and figure.group(0) in answer)
    return {
        "kind": kind,
        "calls": len(calls),
        "calls_valid": sum(c != "malformed" for c in calls),
        "malformed_why": malformed_why(transcript),
        "right_tool": bool(calls and calls[0] and calls[0][0] == ("calculator" if kind == "calculator" else "search")),
        "args_right": args_right,
        "answer_right": answer_right,
        "status": result.status,
        "question": question,
        "answer": answer[:300],
    }


def score_layout_ratio(rng: random.Random, world: World, model: str, out: Path) -> dict:
    """The mean valuation/amount ratio of an invented company whose funding page is in a layout
    held out of llmos-smol's training (prose, several currencies): right when the first calculator
    call gives the reference's value (within 1%) and the answer states the calculator's result."""
    turns = smol_data.ratio_question(rng, world, layouts=smol_data.HELD_OUT_LAYOUTS)
    world.publish()
    reference = next(c for c in calls_in(_as_transcript(turns)) if c and c[0] == "calculator")[1]
    want = float(_value(reference) or "nan")
    result, transcript = run(
        {"prompt": turns[0].text, "tools": all_tool_names(), "web": f"archive:{world.root}"}, model, out
    )
    calls = calls_in(transcript)
    first = next((c[1] for c in calls if c and c[0] == "calculator"), None)
    got = _value(first) if first is not None else None
    right = got is not None and abs(float(got.replace(",", "")) - want) <= 0.01 * abs(want)
    return {
        "question": turns[0].text,
        "layout": turns[0].meta["layout"],
        "calls": [c[0] if c else "malformed" for c in calls],
        "ratio_right": right,
        "success": bool(right and got and got in (result.answer or "")),
        "status": result.status,
        "expression": str(first.get("expression", ""))[:400] if first else None,
        "reference": reference["expression"],
        "malformed_why": malformed_why(transcript),
        "working": working_before(transcript, "calculator")[:600],
    }


def working_before(transcript: dict, tool: str) -> str:
    """The model's words in the turn of its first ``tool`` call, before that turn's first call marker
    (for the ratio: the rounds it listed, or did not, before copying them into the calculator)."""
    for turn in transcript["turns"]:
        if turn["role"] == "assistant" and f'"{tool}"' in turn["text"]:
            return re.split(CALL_OPENS, turn["text"], maxsplit=1)[0].strip()
    return ""


def _value(arguments: dict) -> str | None:
    from llmos_apps.calculator import calculator
    from llmos_tools import ToolError

    try:
        return calculator(str(arguments.get("expression", "")))
    except ToolError:
        return None


def _as_transcript(turns) -> dict:
    return {"turns": [{"role": t.role, "text": t.text} for t in turns]}


def chat_prompts(limit: int, path: Path = CHAT_PROMPTS) -> list[str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")][:limit]


def score_plain_chat(prompt: str, model: str, out: Path) -> dict:
    """A prompt that needs no tool: right when the turn ends with an answer and nothing was called."""
    result, transcript = run({"prompt": prompt, "tools": all_tool_names()}, model, out)
    calls = sum(1 for turn in transcript["turns"] if turn["role"] == "result")
    answer = (result.answer or "").strip()
    return {
        "prompt": prompt,
        "calls": calls,
        "status": result.status,
        "no_call": calls == 0 and result.status == "answer" and bool(answer),
        "answer": answer[:200],
    }


def score_valuation(company, world_root: Path, model: str, out: Path, reference, prompt: str) -> dict:
    from llmos_tiny.funding import TASK_PROMPT

    task = {"prompt": prompt or TASK_PROMPT.format(name=company), "tools": curriculum.DEMO_TOOLS,
            "web": f"archive:{world_root}", "outputs": ["valuations.csv", "valuations.png"]}  # fmt: skip
    started = time.time()
    result, transcript = run(task, model, out)
    problems = reference.validate_run(out, company, archive=world_root)
    parsed = calls_in(transcript)
    calls = [c[0] if c else "malformed" for c in parsed]
    ratio_args = next((c[1] for c in parsed if c and c[0] == "calculator"), None)
    ratio_right = None if ratio_args is None else _is_ratio(ratio_args, reference, company, world_root)
    pairs = sum(r.valuation_usd is not None for r in reference.page_rounds(company, world_root))
    return {
        "company": company,
        "pairs": pairs,  # rounds with both figures: the terms of the ratio the model must type
        "expression": None if ratio_args is None else str(ratio_args.get("expression")),
        "success": not problems and result.status == "answer",
        "broke_at": broke_at(calls, problems, result.status, ratio_right),
        "status": result.status,
        "problems": problems[:5],
        "calls": calls,
        "calls_valid": sum(c != "malformed" for c in calls),
        "malformed_why": malformed_why(transcript),
        "seconds": round(time.time() - started, 1),
    }


def _is_ratio(arguments: dict, reference, company: str, world_root: Path) -> bool:
    """Whether a calculator call's value is the reference's mean valuation/amount ratio (within 1%)."""
    from llmos_apps.calculator import evaluate

    want = float(evaluate(reference.ratio_expression(reference.page_rounds(company, world_root))))
    try:
        got = float((_value(arguments) or "").replace(",", ""))
    except ValueError:
        return False
    return abs(got - want) <= 0.01 * abs(want)


def broke_at(calls: list[str], problems: list[str], status: str, ratio_right: bool | None = None) -> str | None:
    """The first step of the demo's method that went wrong (None: the run passed), in whichever of
    :data:`METHODS` the calls followed furthest.

    ``ratio_right`` is whether the calculator call computed the mean ratio (None: not judged)."""
    method = max(METHODS, key=lambda steps: _steps_followed(calls, steps))
    for i, step in enumerate(method):
        if i >= len(calls) or calls[i] != step:
            return f"{step} call"  # missing, malformed or another tool
        if step == "calculator" and ratio_right is False:
            return "ratio"
    if any(p.endswith("is missing") for p in problems):
        return "python run"  # the cell failed before it wrote its files
    if any("imputed" in p for p in problems):
        return "ratio"  # reported rows right, imputed ones off: the calculator's expression
    if problems:
        return "artifacts"
    return None if status == "answer" else "summary"


def _steps_followed(calls: list[str], steps: tuple[str, ...]) -> int:
    return next((i for i, step in enumerate(steps) if i >= len(calls) or calls[i] != step), len(steps))


def evaluate(
    model: str,
    n: int,
    companies: int,
    demo: bool = True,
    chat: int = 50,
    layouts: int = 10,
    chat_file: Path = CHAT_PROMPTS,
) -> dict:
    reference = _reference()
    rng = random.Random(SEED)
    work = Path(tempfile.mkdtemp(prefix="tiny-eval-"))
    chats, valuations, demos = [], [], []
    plain = [score_plain_chat(p, model, work / f"plain-{i}") for i, p in enumerate(chat_prompts(chat, chat_file))]
    with World() as world:
        ratios = []
        for i in range(layouts):
            world.reset()
            ratios.append(score_layout_ratio(rng, world, model, work / f"layout-{i}"))
        for i in range(n):
            world.reset()
            kind = "calculator" if i % 2 == 0 else "lookup"
            chats.append(score_chat_task(kind, rng, world, model, work / f"chat-{i}"))
        for i in range(companies):
            world.reset()
            turns = curriculum.valuation(rng, world)
            world.publish()
            name = turns[1].text.split('"query": "')[1].split(" funding rounds")[0]
            valuations.append(score_valuation(name, world.root, model, work / f"valuation-{i}", reference, ""))
    if demo:
        for slug, name in reference.companies().items():
            result = score_valuation(name, reference.ARCHIVE, model, work / f"demo-{slug}", reference, "")
            demos.append(result)
    report = summarize(chats, valuations, demos, plain)
    report["held_out_layout_ratio"] = round(sum(r["success"] for r in ratios) / max(1, len(ratios)), 3)
    report["counts"]["held_out_layout_tasks"] = len(ratios)
    report["layout_tasks"] = ratios
    return report


def by_pairs(valuations: list[dict]) -> dict[str, str]:
    """Successes by the ratio's number of terms (``"7+"`` pools the longest tables): ``{"2": "20/21"}``."""
    tally: dict[str, list[int]] = {}
    for r in sorted(valuations, key=lambda r: r["pairs"]):
        cell = tally.setdefault(str(r["pairs"]) if r["pairs"] < 7 else "7+", [0, 0])
        cell[0] += bool(r["success"])
        cell[1] += 1
    return {k: f"{ok}/{n}" for k, (ok, n) in tally.items()}


def summarize(chats: list[dict], valuations: list[dict], demos: list[dict], plain: list[dict] | None = None) -> dict:
    def share(rows: list[dict], key: str) -> float:
        return round(sum(bool(r[key]) for r in rows) / max(1, len(rows)), 3)

    calls = sum(r["calls"] for r in chats) + sum(len(r["calls"]) for r in valuations)
    valid = sum(r["calls_valid"] for r in chats) + sum(r["calls_valid"] for r in valuations)
    by_kind = {kind: [r for r in chats if r["kind"] == kind] for kind in ("calculator", "lookup")}
    report = {
        "call_valid": round(valid / max(1, calls), 3),
        "right_tool": share(chats, "right_tool"),
        "args_right": share(chats, "args_right"),
        "answer_right": share(chats, "answer_right"),
        "valuation_success": share(valuations, "success"),
        "demo_success": share(demos, "success"),
        "per_kind": {
            k: {m: share(v, m) for m in ("right_tool", "args_right", "answer_right")} for k, v in by_kind.items()
        },
        "chat_no_call": share(plain or [], "no_call"),
        "counts": {
            "chat_tasks": len(chats),
            "calls": calls,
            "companies": len(valuations),
            "demo": len(demos),
            "plain_chat": len(plain or []),
        },
        "targets": {k: f">= {v:.2f}" for k, v in TARGETS.items()},  # as benchmarks/run_all.py reads them
    }
    report["met"] = {k: report[k] >= v for k, v in TARGETS.items()}
    broke = Counter(r["broke_at"] for r in valuations if r["broke_at"])
    report["valuation_broke_at"] = dict(broke.most_common())
    report["malformed_why"] = dict(Counter(w for r in chats + valuations for w in r["malformed_why"]))
    report["valuation_by_pairs"] = by_pairs(valuations)
    report["valuations"] = valuations
    report["demo"] = demos
    report["failures"] = [r for r in chats if not (r["args_right"] and r["answer_right"])][:8]
    report["chat_failures"] = [r for r in plain or [] if not r["no_call"]][:8]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="default")
    parser.add_argument("--n", type=int, default=40, help="calculator and lookup tasks (half each)")
    parser.add_argument("--companies", type=int, default=20, help="invented companies for the valuation task")
    parser.add_argument("--no-demo", action="store_true", help="skip the three real companies")
    parser.add_argument("--chat", type=int, default=50, help="plain chat prompts (chat_no_call)")
    parser.add_argument(
        "--chat-prompts", type=Path, default=CHAT_PROMPTS, help="their file (data/chat_dev_prompts.txt: for tuning)"
    )
    parser.add_argument("--layouts", type=int, default=10, help="ratio questions on pages in held-out layouts")
    parser.add_argument("--dry-multiplier", type=float, help="llama.cpp's DRY penalty (0: off; default: the model's)")
    parser.add_argument("--dry-allowed-length", type=int, help="longest repeat DRY lets pass (default: the model's)")
    parser.add_argument("--no-call-grammar", action="store_true", help="decode calls without the call grammar")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.no_call_grammar:
        SAMPLING["constrain_calls"] = False
    for name in ("dry_multiplier", "dry_allowed_length"):
        if getattr(args, name) is not None:
            SAMPLING[name] = getattr(args, name)
    model = str(Path(args.model).resolve()) if Path(args.model).is_file() else args.model  # a file or a name
    report = evaluate(
        model,
        args.n,
        args.companies,
        demo=not args.no_demo,
        chat=args.chat,
        layouts=args.layouts,
        chat_file=args.chat_prompts,
    )
    report["model"] = resolve_spec(model)  # "default" recorded as what it named
    report["sampling"] = {"model": dataclasses.asdict(model_sampling(model)), "set": SAMPLING}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for key in TARGETS:
        print(f"{key:18} {report[key]:.3f}  (target {TARGETS[key]})")
    print(f"{'chat_no_call':18} {report['chat_no_call']:.3f}  (target {CHAT_TARGET})")
    print(f"{'held_out_layout_ratio':18} {report['held_out_layout_ratio']:.3f}  (target {LAYOUT_TARGET})")
    print(f"{'demo_success':18} {report['demo_success']:.3f}  {[d['company'] for d in report['demo'] if d['success']]}")
    for row in report["valuations"][:5]:
        print(row["company"], row["status"], row["calls"], row["problems"][:2])


if __name__ == "__main__":
    main()
