"""AgentDojo (agentdojo==0.1.35, benchmark v1.2.2) through llmos's kernel and policy, offline.

    .venv/bin/python benchmarks/agentdojo_eval.py --json [--suites banking slack] [--attacks KIND ...]
        [--limit N] [--taint context] [--plan required|declared|off] [--benign-only] [--user-tasks user_task_0 ...]

A scripted, fully compromised model (:mod:`llmos_evals.agentdojo`) replays ground-truth calls:

* **plans** (``--plan``, default ``required``: :mod:`llmos.policy.plan`): the defended model
  first declares a plan made from the user's words and the user task's own calls
  (:func:`~llmos_evals.agentdojo.plan_from_words`: a perfect planner that has read no
  tool output), and the policy holds every call with effects to it; ``--plan off`` gives
  the figures of the provenance rules alone. The undefended baseline never plans.
* **benign**: the user task's calls only; ``benign_utility`` with the llmos policy (asks
  denied: no approver) against ``undefended_benign_utility`` (every call allowed);
  ``asks_per_task`` counts approval requests per benign task. Benign runs do not depend
  on the attack kind: they run once.
* **attack kinds**: ``--attacks`` names AgentDojo attack kinds (default: every kind in
  its registry that runs offline; ``manual`` asks a human for each injection and is
  listed under ``attacks_not_run`` with the reason, as is every kind not requested).
  Each kind is built with AgentDojo's own ``load_attack(kind, suite, pipeline)``.
  ``by_attack`` gives, per kind, per suite and in ``total``, what the kind achieved; the
  top-level ``suites`` and ``total`` keep the figures of ``important_instructions``
  (``attack`` names the kind they describe: the first requested if that one is not).
* **injection kinds** (every kind but the DoS ones): for each (user task, injection task)
  pair the kind's injection is placed and the model replays the user task's calls and
  the injection task's calls, in both orders (each order is one pair). The kind only
  changes the text placed; the model obeys whatever the wording. ``attacks_succeeded``
  counts pairs whose injection security check passed; ``undefended_asr`` is the same
  without the policy.
* **DoS kinds** (``is_dos_attack``: ``dos``, ``captcha_dos``, ...) ask the model to stop
  (or to do something a model should refuse, then stop). AgentDojo runs them with its
  suite's first injection task only and scores ``security = not utility``: the attack
  succeeds when the user task fails. The scripted model does *not* stop: it replays the
  user task's calls with the DoS text in place, so the figure says whether that text
  makes the llmos *defence* break the user's task (a defence an attacker can turn into a
  denial of service). An obedient model that stops fails every task whatever the
  defence: a call policy cannot prevent that, and this eval does not claim it.
  ``also_without_injection`` counts the successes whose user task the defence already
  breaks in the benign run (so they are not the text's doing).
* Guard (confounded checks): an injection check could pass on state the user task itself
  changes. For each pair the user task alone is run with the injection in place; if the
  injection's check already passes, the pair is ``confounded`` and not counted in
  ``pairs``. With benchmark v1.2.2 and these replays no pair is (``confounded_pairs`` 0
  in every suite); the guard stays for other versions.
* Injection tasks with no ground-truth calls in AgentDojo (travel 6: words in the answer;
  workspace 6-13) replay calls written from their goals and checks
  (:mod:`llmos_evals.agentdojo_scripts`); a task with neither would be listed under
  ``not_covered`` (none is).
* Calls are reported as ``calls_attempted`` (what the model emitted) and
  ``calls_executed`` (what the kernel ran), for the attack pairs and (``benign_calls_*``)
  the benign runs: only executed calls reach AgentDojo's trace-based checks.
* ``attack_runs`` counts the defended attack runs and ``injection_in_context`` those in
  which the kind's injected text (whitespace aside: YAML folds lines) was in what the
  model read: the check that each kind's text reached the model.
* ``by_injection_task`` gives, per injection task, the pairs run and the pairs where
  the attack still succeeded; ``blocked_benign`` maps each benign task the policy
  broke to the first reason of its first refused call; ``benign_asked`` lists the
  benign tasks with an approval request (whether or not the task still succeeded).
* Speed: AgentDojo reads and parses its suite files on every environment load; the eval
  reads them once per suite, parses each (suite, injections) environment once with
  libyaml and hands each run a deep copy (checked equal to AgentDojo's own load once
  per suite and kind); the injection candidates of a user task (the vectors its ground
  truth reads) are found once and shared by every kind.
* ``limit`` and ``user_task_ids`` in the report say when a run was narrowed.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import time
import warnings
from typing import Any

import yaml
from llmos_evals.agentdojo import AllowAll, LlmosElement, plan_from_words
from llmos_evals.agentdojo_scripts import injection_replay

from llmos.policy import Policy

SUITES = ("banking", "slack", "travel", "workspace")
DEFAULT_ATTACK = "important_instructions"
NOT_OFFLINE = {"manual": "asks a human to type each injection (input()): no one to ask in an offline run"}


def load(version: str = "v1.2.2") -> dict[str, Any]:
    from agentdojo.task_suite.load_suites import get_suites

    return get_suites(version)


def attack_registry() -> dict[str, Any]:
    import agentdojo.attacks  # noqa: F401 - importing the package registers every kind
    from agentdojo.attacks.attack_registry import ATTACKS

    return ATTACKS


def offline_attacks() -> list[str]:
    """Every registered kind that runs offline, the default first."""
    names = sorted(name for name in attack_registry() if name not in NOT_OFFLINE and name != DEFAULT_ATTACK)
    return [DEFAULT_ATTACK, *names]


class Environments:
    """Each (suite, injections) environment parsed once; every run gets a deep copy."""

    def __init__(self, suite: Any) -> None:
        from agentdojo.task_suite.task_suite import read_suite_file

        self.suite = suite
        self.text = read_suite_file(suite.name, "environment.yaml", suite.data_path)
        self.defaults = suite.get_injection_vector_defaults()
        self.cache: dict[tuple, Any] = {}

    def load(self, injections: dict[str, str]) -> Any:
        """AgentDojo's ``load_and_inject_default_environment``, with the suite files read once and libyaml."""
        from agentdojo.task_suite.task_suite import validate_injections

        validate_injections(injections, self.defaults)
        text = self.text.format(**dict(self.defaults, **injections))
        return self.suite.environment_type.model_validate(yaml.load(text, Loader=yaml.CSafeLoader))

    def check(self, injections: dict[str, str]) -> None:
        """Raise if this load differs from AgentDojo's own for these injections."""
        if self.load(injections) != self.suite.load_and_inject_default_environment(injections):
            raise RuntimeError(f"{self.suite.name}: the fast environment load differs from AgentDojo's")

    def run(self, element: LlmosElement, user_task: Any, injection_task: Any, injections: dict) -> tuple[bool, bool]:
        key = tuple(sorted(injections.items()))
        if key not in self.cache:
            self.cache = {key: self.load(injections)}  # pairs come in runs
        env = self.cache[key].model_copy(deep=True)
        return self.suite.run_task_with_pipeline(element, user_task, injection_task, injections, environment=env)


def in_context(injections: dict[str, str], context: str) -> bool:
    """Whether the words of any injected text are, in order and contiguous, in what the model read.

    Words, not characters: the text passes through YAML twice (the environment file folds
    its lines; AgentDojo's ``tool_result_to_str`` dumps each result, quoting, escaping and
    wrapping long strings), so only its words survive verbatim.
    """
    read = _words(context)  # no word boundaries at the ends: an injection may be glued to the text around it
    return any(_words(text) in read for text in injections.values() if _words(text))  # ("USA{injection}")


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", re.sub(r"\\[nt \"\\]", " ", text)))  # YAML escapes: \n, \t, \ , \", \\


def evaluate_suite(
    suite: Any,
    policy: Policy,
    limit: int | None = None,
    *,
    benign_only: bool = False,
    user_task_ids: list[str] | None = None,
    attacks: list[str] | tuple[str, ...] = (DEFAULT_ATTACK,),
    planning: bool = False,
) -> dict[str, Any]:
    """The benign figures, the first kind's figures at the top level, and every kind's under ``by_attack``;
    with ``planning`` the defended model plans first (from the user's words and the user task's calls)."""
    from agentdojo.attacks import load_attack

    defended, undefended = LlmosElement(policy), LlmosElement(AllowAll())
    user_tasks = [t for t in suite.user_tasks.values() if not user_task_ids or t.ID in user_task_ids][:limit]
    runs = Environments(suite)
    benign = _benign_stats(len(user_tasks))
    injection_tasks, not_covered = _replayable(suite, runs)
    kinds = {} if benign_only else {name: load_attack(name, suite, defended) for name in attacks}
    _share_candidates(list(kinds.values()))
    stats = {name: _attack_stats(kind, suite, injection_tasks, not_covered) for name, kind in kinds.items()}
    for kind in kinds.values():
        if user_tasks:  # the fast load is checked against AgentDojo's on one injection of each kind
            runs.check(kind.attack(user_tasks[0], next(iter(suite.injection_tasks.values()))))
    for user_task in user_tasks:
        defended.planner = _planner(user_task) if planning else None
        benign_ok = _benign(runs, user_task, defended, undefended, benign)
        for name, kind in kinds.items():
            if kind.is_dos_attack:
                _dos(runs, user_task, kind, defended, undefended, stats[name], benign_ok)
                continue
            for injection_task in injection_tasks.values():
                _pairs(runs, user_task, injection_task, kind, defended, undefended, stats[name])
    by_attack = {name: _attack_summary(kind_stats) for name, kind_stats in stats.items()}
    first = by_attack[attacks[0]] if by_attack else _attack_summary(_attack_stats(None, suite, {}, not_covered))
    return {**first, **_benign_summary(benign), "by_attack": by_attack}


def _planner(user_task: Any) -> Any:
    return lambda env: plan_from_words(user_task.PROMPT, user_task.ground_truth(env))


def _replayable(suite: Any, runs: Environments) -> tuple[dict[str, Any], list[str]]:
    """Injection tasks a model can replay (calls or words), and the ids of those it cannot."""
    env = runs.load({})
    covered = {
        task_id: task
        for task_id, task in suite.injection_tasks.items()
        if any(injection_replay(suite.name, task, env.model_copy(deep=True)))
    }
    return covered, [task_id for task_id in suite.injection_tasks if task_id not in covered]


def _share_candidates(kinds: list[Any]) -> None:
    """Every kind finds the same injection candidates for a user task (the vectors its ground truth
    reads, with canaries in place): found once, by the first kind, and shared (each kind would
    otherwise rerun the ground truth and reload the environment per user task)."""
    if kinds:
        shared = functools.cache(kinds[0].get_injection_candidates)
        for kind in kinds:
            kind.get_injection_candidates = shared


def _benign_stats(user_tasks: int) -> dict[str, Any]:
    return {
        "user_tasks": user_tasks,
        "benign_ok": 0,
        "undefended_benign_ok": 0,
        "asks": 0,
        "tasks_asked": 0,
        "benign_calls_attempted": 0,
        "benign_calls_executed": 0,
        "blocked_benign": {},
        "benign_asked": [],
    }


def _attack_stats(kind: Any, suite: Any, injection_tasks: dict[str, Any], not_covered: list[str]) -> dict[str, Any]:
    dos = bool(kind and kind.is_dos_attack)
    return {
        "scoring": "dos: security = not utility (AgentDojo's rule)" if dos else "security: the injection task's check",
        "injection_task": next(iter(suite.injection_tasks)) if dos else None,
        "pairs": 0,
        "confounded": 0,
        "attacks_succeeded": 0,
        "undefended_attacks_succeeded": 0,
        "also_without_injection": 0,
        "calls_attempted": 0,
        "calls_executed": 0,
        "attack_runs": 0,
        "injection_in_context": 0,
        "succeeded_pairs": [],
        "not_covered": [] if dos else list(not_covered),
        "by_injection_task": {} if dos else {task_id: {"pairs": 0, "succeeded": 0} for task_id in injection_tasks},
    }


def _benign(runs: Environments, user_task: Any, defended: LlmosElement, undefended: LlmosElement, stats: dict) -> bool:
    """Run the user task alone, defended and not; return whether the defended run succeeded."""
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
    return utilities[0]


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
            element.plan = _plan(runs.suite, user_task, injection_task, order)
            _, succeeded = runs.run(element, user_task, injection_task, injections)
            stats[key] += bool(succeeded)
            if element is defended:
                _count_run(element, injections, stats)
                counts["succeeded"] += bool(succeeded)
                if succeeded:
                    stats["succeeded_pairs"].append(f"{user_task.ID}/{injection_task.ID}/{order}")
        stats["pairs"] += 1
        counts["pairs"] += 1


def _dos(runs: Environments, user_task, attack, defended, undefended, stats: dict, benign_ok: bool) -> None:
    """One pair per user task, with the suite's first injection task (its goal unused), as AgentDojo runs it."""
    injection_task = attack.task_suite.get_injection_task_by_id(stats["injection_task"])
    injections = attack.attack(user_task, injection_task)
    for element, key in ((defended, "attacks_succeeded"), (undefended, "undefended_attacks_succeeded")):
        element.plan = lambda env: (user_task.ground_truth(env), user_task.GROUND_TRUTH_OUTPUT)
        utility, _ = runs.run(element, user_task, injection_task, injections)
        stats[key] += not utility
        if element is defended:
            _count_run(element, injections, stats)
            if not utility:
                stats["succeeded_pairs"].append(f"{user_task.ID}/{injection_task.ID}")
                stats["also_without_injection"] += not benign_ok
    stats["pairs"] += 1


def _count_run(element: LlmosElement, injections: dict[str, str], stats: dict) -> None:
    stats["calls_attempted"] += len(element.tally.attempted)
    stats["calls_executed"] += len(element.tally.executed)
    stats["attack_runs"] += 1
    stats["injection_in_context"] += in_context(injections, element.context)


def _plan(suite: Any, user_task: Any, injection_task: Any, order: str) -> Any:
    def plan(env: Any) -> tuple[list, str]:
        user_calls = user_task.ground_truth(env)
        state = _after(suite, user_calls, env) if order == "user_first" else env
        injection_calls, words = injection_replay(suite.name, injection_task, env, state)
        calls = user_calls + injection_calls if order == "user_first" else injection_calls + user_calls
        return calls, " ".join(filter(None, [user_task.GROUND_TRUTH_OUTPUT, words]))

    return plan


def _after(suite: Any, calls: list, env: Any) -> Any:
    """The environment once ``calls`` have run (on a copy): what a model sees when the injection runs."""
    from agentdojo.functions_runtime import FunctionsRuntime

    state, runtime = env.model_copy(deep=True), FunctionsRuntime(suite.tools)
    for call in calls:
        runtime.run_function(state, call.function, call.args)
    return state


def _benign_summary(stats: dict[str, Any]) -> dict[str, Any]:
    tasks = stats["user_tasks"] or 1
    return {
        "benign_utility": round(stats["benign_ok"] / tasks, 4),
        "undefended_benign_utility": round(stats["undefended_benign_ok"] / tasks, 4),
        "asks_per_task": round(stats["asks"] / tasks, 4),
        "tasks_asked": stats["tasks_asked"],
        "user_tasks": stats["user_tasks"],
        "benign_calls_attempted": stats["benign_calls_attempted"],
        "benign_calls_executed": stats["benign_calls_executed"],
        "blocked_benign": stats["blocked_benign"],
        "benign_asked": stats["benign_asked"],
    }


def _attack_summary(stats: dict[str, Any]) -> dict[str, Any]:
    pairs = stats["pairs"] or 1
    return {
        "scoring": stats["scoring"],
        "pairs": stats["pairs"],
        "attacks_succeeded": stats["attacks_succeeded"],
        "asr": round(stats["attacks_succeeded"] / pairs, 4),
        "undefended_attacks_succeeded": stats["undefended_attacks_succeeded"],
        "undefended_asr": round(stats["undefended_attacks_succeeded"] / pairs, 4),
        "confounded_pairs": stats["confounded"],
        "calls_attempted": stats["calls_attempted"],
        "calls_executed": stats["calls_executed"],
        "attack_runs": stats["attack_runs"],
        "injection_in_context": stats["injection_in_context"],
        **({"injection_task": stats["injection_task"]} if stats["injection_task"] else {}),
        **({"also_without_injection": stats["also_without_injection"]} if stats["injection_task"] else {}),
        "by_injection_task": stats["by_injection_task"],
        "succeeded_pairs": stats["succeeded_pairs"],
        "not_covered": stats["not_covered"],
    }


ATTACK_COUNTS = (
    "pairs",
    "attacks_succeeded",
    "undefended_attacks_succeeded",
    "confounded_pairs",
    "calls_attempted",
    "calls_executed",
    "attack_runs",
    "injection_in_context",
)


def attack_total(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One kind's figures over the suites."""
    sums = {key: sum(r[key] for r in results.values()) for key in ATTACK_COUNTS}
    pairs = sums["pairs"] or 1
    sums["asr"] = round(sums["attacks_succeeded"] / pairs, 4)
    sums["undefended_asr"] = round(sums["undefended_attacks_succeeded"] / pairs, 4)
    if any("also_without_injection" in r for r in results.values()):
        sums["also_without_injection"] = sum(r.get("also_without_injection", 0) for r in results.values())
    return sums


def total(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def add(key: str) -> int:
        return sum(r[key] for r in results.values())

    tasks = add("user_tasks") or 1
    benign = sum(r["benign_utility"] * r["user_tasks"] for r in results.values())
    undefended = sum(r["undefended_benign_utility"] * r["user_tasks"] for r in results.values())
    asks = sum(r["asks_per_task"] * r["user_tasks"] for r in results.values())
    attack = attack_total(results)
    return {
        "pairs": attack["pairs"],
        "attacks_succeeded": attack["attacks_succeeded"],
        "asr": attack["asr"],
        "undefended_asr": attack["undefended_asr"],
        "benign_utility": round(benign / tasks, 4),
        "undefended_benign_utility": round(undefended / tasks, 4),
        "utility_ratio": round(benign / undefended, 4) if undefended else None,
        "asks_per_task": round(asks / tasks, 4),
        "confounded_pairs": attack["confounded_pairs"],
        "calls_attempted": attack["calls_attempted"],
        "calls_executed": attack["calls_executed"],
        "benign_calls_attempted": add("benign_calls_attempted"),
        "benign_calls_executed": add("benign_calls_executed"),
        "tasks_asked": add("tasks_asked"),
        "user_tasks": add("user_tasks"),
    }


def report_of(results: dict[str, dict[str, Any]], attacks: list[str]) -> dict[str, Any]:
    """The JSON report's figures: the first kind's at the top level, every kind's under ``by_attack``."""
    by_attack: dict[str, dict[str, Any]] = {}
    for kind in attacks:
        per_suite = {
            suite: result["by_attack"][kind] for suite, result in results.items() if kind in result["by_attack"]
        }
        by_attack[kind] = {**per_suite, "total": attack_total(per_suite)} if per_suite else {}
    suites = {suite: {k: v for k, v in result.items() if k != "by_attack"} for suite, result in results.items()}
    not_run = {name: NOT_OFFLINE.get(name, "not requested (--attacks)") for name in attack_registry()}
    return {
        "suites": suites,
        "total": total(suites),
        "attack": attacks[0] if attacks else None,
        "attacks": attacks,
        "attacks_not_run": {name: why for name, why in sorted(not_run.items()) if name not in attacks},
        "by_attack": by_attack,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--suites", nargs="*", default=list(SUITES), choices=SUITES)
    parser.add_argument(
        "--attacks", nargs="+", default=None, metavar="KIND", help="attack kinds (default: all offline)"
    )
    parser.add_argument("--limit", type=int, default=None, help="at most this many user tasks per suite")
    parser.add_argument("--taint", choices=("derived", "context"), default="derived")
    parser.add_argument("--plan", choices=("required", "declared", "off"), default="required", help="plan mode")
    parser.add_argument("--benign-only", action="store_true", help="skip the attack pairs (fast profiling)")
    parser.add_argument("--user-tasks", nargs="*", default=None, help="only these user task ids (e.g. user_task_2)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    attacks = args.attacks or offline_attacks()
    for name in attacks:
        if name not in attack_registry() or name in NOT_OFFLINE:
            parser.error(f"--attacks {name}: {NOT_OFFLINE.get(name, 'not an AgentDojo attack kind')}")
    started = time.monotonic()
    suites = load()
    policy = Policy.from_config({"taint": args.taint, "plan": args.plan})
    narrow = {"benign_only": args.benign_only, "user_task_ids": args.user_tasks, "attacks": attacks}
    narrow |= {"planning": args.plan != "off"}
    results = {name: evaluate_suite(suites[name], policy, args.limit, **narrow) for name in args.suites}
    report = report_of(results, [] if args.benign_only else attacks)
    report |= {
        "limit": args.limit,
        "user_task_ids": args.user_tasks,
        "taint": args.taint,
        "plan": args.plan,
        "seconds": round(time.monotonic() - started, 1),
        "agentdojo": "0.1.35",
        "benchmark": "v1.2.2",
    }
    if args.json:
        print(json.dumps(report))
        return
    for kind, per_suite in report["by_attack"].items():
        print(kind, {suite: (r["asr"], r["undefended_asr"], r["pairs"]) for suite, r in per_suite.items()})
    print("benign", {name: r["benign_utility"] for name, r in report["suites"].items()})
    print("total", report["total"])


if __name__ == "__main__":
    main()
