"""Benchmark the memory store: ingest speed and recall latency at a million pages.

    python benchmarks/memory.py --json            # prints one JSON object
    python benchmarks/memory.py --pages 20000     # a smaller corpus, for a quick look

The recall corpus is synthetic (a Zipf-distributed vocabulary of made-up words, so BM25
sees realistic term frequencies), generated once through the store's own ingest path and
cached outside the repository (``~/.cache/llmos/bench`` or ``$LLMOS_BENCH_CACHE``). It is
built under a temporary name and renamed when complete, so an interrupted build is never
reused. Queries are three words from a random page, leaving out the 100 most frequent
words (the synthetic language's function words), as a model's recall query would;
``recall_source_in_top5`` says how often that page was among the five hits.

Each measurement is a function ``(args) -> dict`` listed in ``MEASUREMENTS``; add more
the same way. Nothing here asserts a speed: the numbers are reported, not tested.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmos_memory import Store

CORPUS_VERSION = 1  # bump when the generator changes, so old caches are not reused
VOCABULARY = 50_000
FUNCTION_WORDS = 100  # the most frequent words, left out of queries like English stopwords
WORDS_PER_PAGE = 110  # about 200 tokens by the store's estimate
PAGES_PER_DOCUMENT = 100
QUERIES = 300


def cache_dir() -> Path:
    return Path(os.environ.get("LLMOS_BENCH_CACHE", Path.home() / ".cache" / "llmos" / "bench"))


class Language:
    """A made-up language: deterministic words with Zipf frequencies."""

    def __init__(self, seed: int = 1) -> None:
        rng = random.Random(seed)
        syllables = ["ka", "lo", "mi", "ra", "tu", "ne", "so", "vi", "de", "ph",
                     "an", "el", "or", "us", "th", "ix", "qu", "bo", "za", "ge"]  # fmt: skip
        words: dict[str, None] = {}
        while len(words) < VOCABULARY:
            words["".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))] = None
        self.words = list(words)
        self.weights = list(itertools.accumulate(1 / (rank + 1) ** 1.05 for rank in range(VOCABULARY)))
        self.function_words = set(self.words[:FUNCTION_WORDS])

    def page(self, rng: random.Random) -> str:
        return " ".join(rng.choices(self.words, cum_weights=self.weights, k=WORDS_PER_PAGE)) + "."

    def document(self, rng: random.Random, pages: int) -> str:
        return "\n\n".join(self.page(rng) for _ in range(pages))


def ingest(store: Store, language: Language, pages: int, seed: int, log: Callable[[str], None]) -> float:
    """Ingest ``pages`` synthetic pages into ``store``; returns pages per second (ingest only, not generation)."""
    rng = random.Random(seed)
    spent = 0.0
    for number in range(0, pages, PAGES_PER_DOCUMENT):
        text = language.document(rng, min(PAGES_PER_DOCUMENT, pages - number))
        started = time.perf_counter()
        store.add_text(text, f"synthetic://{seed}/{number // PAGES_PER_DOCUMENT}")
        spent += time.perf_counter() - started
        if number % 100_000 == 0 and number:
            log(f"  {number:,} pages ingested ({number / spent:,.0f} pages/s)")
    return pages / spent


def open_corpus(pages: int, log: Callable[[str], None]) -> Store:
    """The cached corpus of ``pages`` pages, built first if missing."""
    path = cache_dir() / f"memory-{pages}-v{CORPUS_VERSION}.sqlite"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        for leftover in path.parent.glob(partial.name + "*"):
            leftover.unlink()
        log(f"building the {pages:,}-page corpus at {path} (once; a few minutes)")
        started = time.perf_counter()
        with Store(partial, page_tokens=256) as store:
            ingest(store, Language(), pages, seed=7, log=log)
            store.optimize()
            store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        partial.rename(path)
        log(f"built in {time.perf_counter() - started:.0f} s")
    return Store(path, page_tokens=256)


def measure_ingest(args: argparse.Namespace) -> dict[str, Any]:
    """Pages per second into a fresh store (documents of 100 pages, one transaction each)."""
    with tempfile.TemporaryDirectory() as folder, Store(Path(folder) / "ingest.sqlite", page_tokens=256) as store:
        rate = ingest(store, Language(), args.ingest_pages, seed=11, log=args.log)
    return {"ingest_pages_per_s": round(rate), "ingest_pages": args.ingest_pages}


def measure_recall(args: argparse.Namespace) -> dict[str, Any]:
    """Latency of ``Store.search`` (BM25, top 5) over the cached corpus."""
    language = Language()
    with open_corpus(args.pages, args.log) as store:
        rng = random.Random(3)
        queries: list[tuple[int, str]] = []  # (page the words came from, query)
        top_page = store.stats()["pages"]
        while len(queries) < QUERIES:
            page_id = rng.randint(1, top_page)
            row = store._db.execute("SELECT text FROM pages WHERE id = ?", (page_id,)).fetchone()
            words = [w for w in row[0].rstrip(".").split() if w not in language.function_words]
            queries.append((page_id, " ".join(rng.sample(words, 3))))
        for _, query in queries[:20]:  # warm the page cache, as a running session would be
            store.search(query)
        latencies, found = [], 0
        for page_id, query in queries:
            started = time.perf_counter()
            hits = store.search(query, limit=5)
            latencies.append((time.perf_counter() - started) * 1000)
            found += any(hit.page.id == page_id for hit in hits)
    latencies.sort()
    return {
        "recall_pages": args.pages,
        "recall_queries": len(latencies),
        "recall_p50_ms": round(statistics.median(latencies), 2),
        "recall_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2),
        "recall_source_in_top5": round(found / len(latencies), 3),  # the page the words came from was found
    }


def measure_paging(args: argparse.Namespace) -> dict[str, Any]:
    """KV-level paging on the real llama.cpp CPU (see ``benchmarks/_paging.py``)."""
    import _paging as paging

    args.log("paging: page-out by KV shift vs re-prefill, and a paged session")
    return {**paging.pageout_speedup(), **paging.kv_restore_speedup(), **paging.paged_recompute()}


MEASUREMENTS: list[Callable[[argparse.Namespace], dict[str, Any]]] = [measure_paging, measure_ingest, measure_recall]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object and nothing else on stdout")
    parser.add_argument("--pages", type=int, default=1_000_000, help="recall corpus size (default 1,000,000)")
    parser.add_argument("--ingest-pages", type=int, default=20_000, help="pages for the ingest measurement")
    args = parser.parse_args(argv)
    args.log = lambda message: print(message, file=sys.stderr, flush=True)
    results: dict[str, Any] = {}
    for measure in MEASUREMENTS:
        results.update(measure(args))
    if args.json:
        print(json.dumps(results))
    else:
        for name, value in results.items():
            print(f"{name:>24}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
