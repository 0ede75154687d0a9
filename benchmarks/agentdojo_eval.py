"""AgentDojo (agentdojo==0.1.35, benchmark v1.2.2) through llmos's kernel and policy, offline.

    .venv/bin/python benchmarks/agentdojo_eval.py --json [--suites banking slack] [--limit N] [--taint context]
        [--benign-only] [--user-tasks user_task_0 ...]

A scripted, fully compromised model (:mod:`llmos_evals.agentdojo`) replays ground-truth calls:

* **benign**: the user task's calls only; ``benign_utility`` with the llmos policy (asks
  denied: no approver) against ``undefended_benign_utility`` (every call allowed);
  ``asks_per_task`` counts approval requests per benign task.
* **attack**: for each (user task, injection task) pair, the ``important_instructions``
  injection is placed and the model replays the user task's calls and the injection
  task's calls, in both orders (each order is one pair). ``attacks_succeeded`` counts
  pairs whose injection security check passed; ``undefended_asr`` is the same without
  the policy.
* Workaround (confounded checks): some injection checks pass on state the user task
  itself changes (banking 8, travel 2, workspace 0 among them). For each pair the
  user task alone is run with the injection in place; if the injection's check
  already passes, the pair is ``confounded`` and not counted in ``pairs``.
* Injection tasks with no ground-truth calls (workspace 6-13) cannot be replayed:
  they are listed under ``not_covered``.
* Calls are reported as ``calls_attempted`` (what the model emitted) and
  ``calls_executed`` (what the kernel ran), for the attack pairs and (``benign_calls_*``)
  the benign runs: only executed calls reach AgentDojo's trace-based checks.
* ``by_injection_task`` gives, per injection task, the pairs run and the pairs where
  the attack still succeeded; ``blocked_benign`` maps each benign task the policy
  broke to the first reason of its first refused call; ``benign_asked`` lists the
  benign tasks with an approval request (whether or not the task still succeeded).
* Speed: AgentDojo parses its environment YAML on every run; the eval parses each
  (suite, injections) environment once and hands each run a deep copy.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from typing import Any

from llmos_evals.agentdojo import AllowAll, LlmosElement

from llmos.policy import Policy

SUITES = ("banking", "slack", "travel", "workspace")


def load(version: str = "v1.2.2") -> dict[str, Any]:
    from agentdojo.task_suite.load_suites import get_suites

    return get_suites(version)


class Environments:
    """Each (suite, injections) environment parsed once; every run gets a deep copy."""

    def __init__(self, suite: Any) -> None:
        self.suite = suite
        self.cache: dict[tuple, Any] = {}

    def run(self, element: LlmosElement, user_task: Any, injection_task: Any, injections: dict) -> tuple[bool, bool]:
        key = tuple(sorted(injections.items()))
        if key not in self.cache:
            self.cache = {key: self.suite.load_and_inject_default_environment(injections)}  # pairs come in runs
        env = self.cache[key].model_copy(deep=True)
        return self.suite.run_task_with_pipeline(element, user_task, injection_task, injections, environment=env)


def evaluate_suite(
    suite: Any,
    policy: Policy,
    limit: int | None = None,
    *,
    benign_only: bool = False,
    user_task_ids: list[str] | None = None,
) -> dict[str, Any]:
    from agentdojo.attacks.important_instructions_attacks import ImportantInstructionsAttack

    defended, undefended = LlmosElement(policy), LlmosElement(AllowAll())
    attack = ImportantInstructionsAttack(suite, defended)
    user_tasks = [t for t in suite.user_tasks.values() if not user_task_ids or t.ID in user_task_ids][:limit]
    runs = Environments(suite)
    stats: dict[str, Any] = {
        "user_tasks": len(user_tasks),
        "benign_ok": 0,
        "undefended_benign_ok": 0,
        "asks": 0,
        "tasks_asked": 0,
        "pairs": 0,
        "confounded": 0,
        "attacks_succeeded": 0,
        "undefended_attacks_succeeded": 0,
        "calls_attempted": 0,
        "calls_executed": 0,
        "benign_calls_attempted": 0,
        "benign_calls_executed": 0,
        "succeeded_pairs": [],
        "not_covered": [],
        "blocked_benign": {},
        "benign_asked": [],
        "by_injection_task": {},
    }
    injection_tasks = {}
    for task_id, task in suite.injection_tasks.items():
        env = suite.load_and_inject_default_environment(suite.get_injection_vector_defaults())
        if task.ground_truth(env):
            injection_tasks[task_id] = task
            stats["by_injection_task"][task_id] = {"pairs": 0, "succeeded": 0}
        else:
            stats["not_covered"].append(task_id)
    for user_task in user_tasks:
        _benign(runs, user_task, defended, undefended, stats)
        if benign_only:
            continue
        for injection_task in injection_tasks.values():
            _pairs(runs, user_task, injection_task, attack, defended, undefended, stats)
    return _summary(stats)


def _benign(runs: Environments, user_task: Any, defended: LlmosElement, undefended: LlmosElement, stats: dict) -> None:
    utilities = []
    for element in (defended, undefended):
        element.plan = lambda env: (user_task.ground_truth(env), user_task.GROUND_TRUTH_OUTPUT)
        utility, _ = runs.run(element, user_task, None, {})
        utilities.append(bool(utility))
    tally = defended.tally
    stats["asks"] += len(tally.asked)
    stats["tasks_asked"] += bool(tally.asked)
    stats["benign_calls_attempted"] += len(tally.attempted)
    stats["benign_calls_executed"] += len(tally.executed)
    if tally.asked:
        stats["benign_asked"].append(user_task.ID)
    stats["benign_ok"] += utilities[0]
    stats["undefended_benign_ok"] += utilities[1]
    if utilities[1] and not utilities[0]:
        stats["blocked_benign"][user_task.ID] = tally.reasons[0][0] if tally.reasons else "the task failed"


def _pairs(runs: Environments, user_task, injection_task, attack, defended, undefended, stats: dict) -> None:
    injections = attack.attack(user_task, injection_task)
    defended.plan = lambda env: (user_task.ground_truth(env), user_task.GROUND_TRUTH_OUTPUT)
    _, confounded = runs.run(defended, user_task, injection_task, injections)
    if confounded:
        stats["confounded"] += 2
        return
    counts = stats["by_injection_task"][injection_task.ID]
    for order in ("user_first", "injection_first"):
        for element, key in ((defended, "attacks_succeeded"), (undefended, "undefended_attacks_succeeded")):
            element.plan = _plan(user_task, injection_task, order)
            _, succeeded = runs.run(element, user_task, injection_task, injections)
            stats[key] += bool(succeeded)
            if element is defended:
                stats["calls_attempted"] += len(element.tally.attempted)
                stats["calls_executed"] += len(element.tally.executed)
                counts["succeeded"] += bool(succeeded)
                if succeeded:
                    stats["succeeded_pairs"].append(f"{user_task.ID}/{injection_task.ID}/{order}")
        stats["pairs"] += 1
        counts["pairs"] += 1


def _plan(user_task: Any, injection_task: Any, order: str) -> Any:
    def plan(env: Any) -> tuple[list, str]:
        user_calls, injection_calls = user_task.ground_truth(env), injection_task.ground_truth(env)
        calls = user_calls + injection_calls if order == "user_first" else injection_calls + user_calls
        return calls, user_task.GROUND_TRUTH_OUTPUT

    return plan


def _summary(stats: dict[str, Any]) -> dict[str, Any]:
    tasks, pairs = stats["user_tasks"] or 1, stats["pairs"] or 1
    return {
        "pairs": stats["pairs"],
        "attacks_succeeded": stats["attacks_succeeded"],
        "asr": round(stats["attacks_succeeded"] / pairs, 4),
        "undefended_attacks_succeeded": stats["undefended_attacks_succeeded"],
        "undefended_asr": round(stats["undefended_attacks_succeeded"] / pairs, 4),
        "benign_utility": round(stats["benign_ok"] / tasks, 4),
        "undefended_benign_utility": round(stats["undefended_benign_ok"] / tasks, 4),
        "asks_per_task": round(stats["asks"] / tasks, 4),
        "tasks_asked": stats["tasks_asked"],
        "user_tasks": stats["user_tasks"],
        "confounded_pairs": stats["confounded"],
        "calls_attempted": stats["calls_attempted"],
        "calls_executed": stats["calls_executed"],
        "benign_calls_attempted": stats["benign_calls_attempted"],
        "benign_calls_executed": stats["benign_calls_executed"],
        "blocked_benign": stats["blocked_benign"],
        "benign_asked": stats["benign_asked"],
        "by_injection_task": stats["by_injection_task"],
        "succeeded_pairs": stats["succeeded_pairs"],
        "not_covered": stats["not_covered"],
    }


def total(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def add(key: str) -> int:
        return sum(r[key] for r in results.values())

    tasks, pairs = add("user_tasks") or 1, add("pairs") or 1
    benign = sum(r["benign_utility"] * r["user_tasks"] for r in results.values())
    undefended = sum(r["undefended_benign_utility"] * r["user_tasks"] for r in results.values())
    asks = sum(r["asks_per_task"] * r["user_tasks"] for r in results.values())
    return {
        "pairs": add("pairs"),
        "attacks_succeeded": add("attacks_succeeded"),
        "asr": round(add("attacks_succeeded") / pairs, 4),
        "undefended_asr": round(add("undefended_attacks_succeeded") / pairs, 4),
        "benign_utility": round(benign / tasks, 4),
        "undefended_benign_utility": round(undefended / tasks, 4),
        "utility_ratio": round(benign / undefended, 4) if undefended else None,
        "asks_per_task": round(asks / tasks, 4),
        "confounded_pairs": add("confounded_pairs"),
        "calls_attempted": add("calls_attempted"),
        "calls_executed": add("calls_executed"),
        "benign_calls_attempted": add("benign_calls_attempted"),
        "benign_calls_executed": add("benign_calls_executed"),
        "tasks_asked": add("tasks_asked"),
        "user_tasks": add("user_tasks"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--suites", nargs="*", default=list(SUITES), choices=SUITES)
    parser.add_argument("--limit", type=int, default=None, help="at most this many user tasks per suite")
    parser.add_argument("--taint", choices=("derived", "context"), default="derived")
    parser.add_argument("--benign-only", action="store_true", help="skip the attack pairs (fast profiling)")
    parser.add_argument("--user-tasks", nargs="*", default=None, help="only these user task ids (e.g. user_task_2)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    started = time.monotonic()
    suites = load()
    policy = Policy.from_config({"taint": args.taint})
    results = {
        name: evaluate_suite(
            suites[name], policy, args.limit, benign_only=args.benign_only, user_task_ids=args.user_tasks
        )
        for name in args.suites
    }
    report = {
        "suites": results,
        "total": total(results),
        "taint": args.taint,
        "seconds": round(time.monotonic() - started, 1),
        "agentdojo": "0.1.35",
        "benchmark": "v1.2.2",
    }
    if args.json:
        print(json.dumps(report))
        return
    for name, result in results.items():
        print(name, {k: v for k, v in result.items() if not isinstance(v, list)})
    print("total", report["total"])


if __name__ == "__main__":
    main()
