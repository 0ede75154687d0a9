"""What the lazy call grammar costs: llmos-smol writing its own calls with and without it.

    python benchmarks/call_grammar.py --json [--rounds 3] [--threads 2]

For each request below, llmos-smol (llama.cpp, greedy with its DRY setting) decodes its first
turn twice per round, interleaved: free, and under the dialect's lazy call grammar
(:meth:`~llmos.dialects.base.Dialect.call_grammar`, what the kernel uses by default). Only the
tokens from the call marker to the call's end are timed (all but the first token of an answer
without a call), from one piece to the next:

* ``grammar_call_ratio``: tokens/s inside calls under the grammar ÷ free (medians over rounds,
  requests whose two decodes wrote the same tokens only: the grammar allows what the model
  chose, so greedy decoding gives the same call whenever the free call was well formed);
* ``grammar_prose_ratio``: the same for the plain chat answers (no call: every token after the
  first), where a lazy grammar only waits for its trigger;
* ``free_call_tps`` / ``grammar_call_tps`` / ``free_prose_tps`` / ``grammar_prose_tps``: the rates;
* ``same_tokens``: how many requests decoded the same tokens both ways, of ``requests``.

Not covered: sampling with temperature, the batched engine (``llmos.cpu.batch``, the same
sampler), grammars other than the call grammar.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

REQUESTS = (
    "What is 15% of 1,240?",
    "How much is 3,450 divided by 23?",
    "Compute 17.5 * 12 - 40 for me.",
    "Use python to print the numbers from 1 to 5.",
    "Search the web for the population of Lisbon.",
    "Open https://example.com/report and tell me its title.",
    "hello, who are you?",  # plain chat: no call, the grammar only waits for its trigger
    "Give me three tips for sleeping better.",
)


def _first_turn(machine: Any, specs: list[dict[str, Any]], request: str, lazy: dict[str, Any]) -> tuple[list, list]:
    """The first turn's tokens and the seconds each piece took."""
    from dataclasses import replace

    from llmos.dialects.base import Turn
    from llmos.models import model_sampling

    turns = [Turn("system", machine.dialect.default_system, id=0), Turn("user", request, id=1)]
    machine.cpu.truncate(0)
    machine.cpu.load(machine.dialect.render(turns, specs))
    sampling = replace(model_sampling("llmos-smol"), max_tokens=160, **lazy)
    tokens, seconds, last = [], [], time.perf_counter()
    for piece in machine.cpu.generate(sampling):
        now = time.perf_counter()
        tokens.append(piece.token)
        seconds.append(now - last)
        last = now
    return tokens, seconds


def _first_call(machine: Any, tokens: list[int]) -> slice | None:
    """The first call's tokens after its marker, its end marker included (the kernel stops there);
    ``None`` without a whole call."""
    opening, closing = (machine.cpu.token_id(marker) for marker in machine.dialect.call_markers)
    if opening not in tokens:
        return None
    start = tokens.index(opening) + 1
    return slice(start, tokens.index(closing, start) + 1) if closing in tokens[start:] else None


def measure(rounds: int, threads: int) -> dict[str, Any]:
    from llmos_tools import load_tools

    from llmos.models import open_machine

    machine: Any = open_machine("llmos-smol", n_ctx=2048, n_threads=threads)
    specs = [tool.spec() for tool in load_tools().tools.values()]
    lazy = machine.dialect.call_grammar(specs)
    machine.cpu.not_end.update(machine.cpu.token_id(m) for m in machine.dialect.call_markers)  # as the kernel does
    rates: dict[str, list[float]] = {"free": [], "grammar": [], "free_prose": [], "grammar_prose": []}
    same: set[str] = set()
    try:
        for _ in range(rounds):
            for request in REQUESTS:
                free, free_s = _first_turn(machine, specs, request, {})
                held, held_s = _first_turn(machine, specs, request, lazy)
                call = _first_call(machine, free)
                span = call or slice(1, len(free))  # prose: every token after the first (the prefill)
                if free[: span.stop] != held[: span.stop]:
                    continue
                same.add(request)
                kind = "" if call else "_prose"
                rates[f"free{kind}"].append(len(free[span]) / sum(free_s[span]))
                rates[f"grammar{kind}"].append(len(held[span]) / sum(held_s[span]))
    finally:
        machine.cpu.close()
    if not (rates["free"] and rates["free_prose"]):
        raise SystemExit(f"too few requests decoded the same tokens both ways to compare: {sorted(same)}")
    median = {key: statistics.median(values) for key, values in rates.items()}
    return {
        "grammar_call_ratio": round(median["grammar"] / median["free"], 3),
        "grammar_prose_ratio": round(median["grammar_prose"] / median["free_prose"], 3),
        "free_call_tps": round(median["free"], 1),
        "grammar_call_tps": round(median["grammar"], 1),
        "free_prose_tps": round(median["free_prose"], 1),
        "grammar_prose_tps": round(median["grammar_prose"], 1),
        "same_tokens": len(same),
        "requests": len(REQUESTS),
        "rounds": rounds,
        "threads": threads,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = measure(args.rounds, args.threads)
    print(json.dumps(figures) if args.json else "\n".join(f"{k:20} {v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
