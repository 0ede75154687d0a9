"""llmos-tiny trains on what the kernel really feeds: invented web sites through the real apps.

* The demo archive's pages come from the same template (:mod:`llmos_tiny.funding`) as the
  invented companies of the curriculum, and the demo task files state its task prompt.
* One invented company's valuation transcript, replayed by a scripted model through the real
  runner (kernel, browser in archive mode, calculator, Jupyter sandbox), gives the same context,
  token for token, as the curriculum renders (page ids aside: they are the store's), and the run
  folder passes the demo's own validator.
"""

from __future__ import annotations

import importlib.util
import random
import re
import sys
from itertools import pairwise
from pathlib import Path

import pytest
from helpers import need_module, valuation_reference
from llmos_tiny import curriculum, funding
from llmos_tiny.world import World

from llmos.dialects.llmos import LlmosDialect

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_the_demo_archive_is_the_curriculum_template() -> None:
    pages = _module("build_pages", EXAMPLES / "web" / "build_pages.py")
    for key in pages.COMPANIES:
        shipped = (EXAMPLES / "web" / "pages" / f"{key}-funding.html").read_text(encoding="utf-8")
        assert pages.page(key, None) == shipped
    index = (EXAMPLES / "web" / "pages" / "companies.html").read_text(encoding="utf-8")
    assert funding.home_page(list(pages.COMPANY_FACTS.values())) == index


def test_the_demo_task_files_state_the_trained_prompt() -> None:
    from llmos_shell.task import load_task

    for path, name in [("valuation.yaml", "Scale AI"), ("valuation-databricks.yaml", "Databricks"),
                       ("valuation-hugging-face.yaml", "Hugging Face")]:  # fmt: skip
        task = load_task(EXAMPLES / path)
        assert task.prompt == funding.TASK_PROMPT.format(name=name)
        assert task.tool_names() == curriculum.DEMO_TOOLS


def test_invented_sites_have_the_demo_sites_index_and_free_form_names() -> None:
    # the demo's search also lists the site's index page, and real names ("Hugging Face") are
    # not made of the curriculum's syllables: the model must have seen both
    rng, names, with_index = random.Random(11), [], 0
    with World() as world:
        for _ in range(12):
            world.reset()
            turns = curriculum.valuation(rng, world)
            names.append(turns[1].text.split('"query": "')[1].split(" funding rounds")[0])
            with_index += f"{funding.SITE}/companies/\n" in turns[2].text
    assert 0 < with_index < 12
    syllables = re.compile(f"(?:{'|'.join(funding.SYLLABLES)})+", re.I)
    assert any(not syllables.fullmatch(name.split()[0]) for name in names)


def test_invented_companies_look_like_the_real_ones() -> None:
    rng = random.Random(5)
    for _ in range(200):
        company = funding.random_company(rng)
        assert 3 <= len(company.rows) <= 10
        known = [r for r in company.rows if r[3]]
        assert len(known) >= 2 and len(known) < len(company.rows)  # something to impute, something to impute from
        for date, _, amount, valuation, _ in company.rows:
            assert re.fullmatch(r"[A-Z][a-z]{2} \d{4}", date)
            assert re.fullmatch(r"\$\d+(\.\d+)?[KMBT]", amount)
            assert valuation is None or re.fullmatch(r"\$\d+(\.\d+)?[KMBT]", valuation)
    assert funding.literal("$4.5M") == "4.5e6" and funding.literal("$14.3B") == "14.3e9"
    assert funding.money(4_500_000) == "$4.5M" and funding.money(2.75e9) == "$2.75B"


def test_invented_tables_vary_as_the_real_pages_do() -> None:
    """What tripped the model on Scale AI and Databricks must be common in training: the same figure
    in two cells, a lead investor leading again, ratios far from 10, a round smaller than the last,
    and a last stake whose amount nears the valuation."""
    rng = random.Random(7)
    companies = [funding.random_company(rng) for _ in range(400)]

    def share(test) -> float:
        return sum(1 for c in companies if test(c)) / len(companies)

    def figures(c):
        return [cell for row in c.rows for cell in (row[2], row[3]) if cell]

    def ratios(c):
        return [funding._value(v) / funding._value(a) for _, _, a, v, _ in c.rows if v]

    assert share(lambda c: len(set(figures(c))) < len(figures(c))) > 0.08
    assert share(lambda c: len({lead for row in c.rows for lead in row[4].split(", ")}) < len(c.rows)) > 0.5
    assert share(lambda c: min(ratios(c)) < 4) > 0.1 and share(lambda c: max(ratios(c)) > 25) > 0.1
    amounts = [[funding._value(row[2]) for row in c.rows] for c in companies]
    assert sum(any(b < a for a, b in pairwise(row)) for row in amounts) / len(companies) > 0.2
    stake = lambda c: not c.rows[-1][1].startswith("Series") and c.rows[-1][3] and ratios(c)[-1] < 5  # noqa: E731
    assert share(stake) > 0.01
    assert min(len(funding.random_company(rng, min_rounds=5).rows) for _ in range(50)) >= 5


def test_invented_sites_are_as_long_as_the_demo_archive() -> None:
    """The demo writes its python cell after the search listing and the page: where real pages run
    longer than every invented one, the cell is written at positions the model never trained on
    (llmos-tiny broke exactly there on Scale AI and Databricks while passing invented companies)."""
    pages = _module("build_pages", EXAMPLES / "web" / "build_pages.py")
    rng, invented, real = random.Random(3), [], {}
    with World() as world:
        for _ in range(100):
            world.reset()
            turns = curriculum.valuation(rng, world)
            invented.append(len(turns[2].text) + len(turns[4].text))
        world.reset()
        for key, company in pages.COMPANY_FACTS.items():
            world.add(company.url, pages.page(key, None), company.title, company.keywords)
        for company in pages.COMPANY_FACTS.values():
            listing = world.call("search", query=f"{company.name} funding rounds").text
            real[company.name] = len(listing) + len(world.call("open", url=company.url).text)
    invented.sort()
    assert all(length < invented[80] for length in real.values()), (real, invented[50], invented[80])


def _normalized(text: str) -> str:
    return re.sub(r'\{"id": \d+, "source"', '{"id": N, "source"', text)


def test_a_curriculum_transcript_is_what_the_kernel_feeds(tmp_path: Path) -> None:
    need_module("ipykernel")
    need_module("selectolax")
    from llmos_shell import runner
    from llmos_shell.task import load_task
    from llmos_tools import load_tools

    from llmos.models import Machine
    from llmos.testing import ScriptedCPU

    reference = valuation_reference()
    with World() as world:
        turns = curriculum.valuation(random.Random(11), world)
        turns = [curriculum.Turn("system", curriculum.DEFAULT_SYSTEM, meta={"tools": world_specs()}), *turns]
        for i, turn in enumerate(turns):
            turn.id = i
        world.publish()
        task = load_task(EXAMPLES / "valuation.yaml").model_copy(
            update={"prompt": turns[1].text, "web": f"archive:{world.root}", "checks": []}
        )
        cpu = ScriptedCPU([t.text for t in turns if t.role == "assistant"])

        def machine(_task):
            return Machine(cpu, LlmosDialect(), "scripted")

        options = runner.RunOptions(
            out=tmp_path / "run", store=tmp_path / "s.db", machine_factory=machine, registry=load_tools()
        )
        result = runner.run_task(task, options)
        assert result.exit_code == 0, result.checks
        fed = "".join(s.text for s in cpu.loads[-1])
        ours = "".join(s.text for s in LlmosDialect().render(turns[:-1], turns[0].meta["tools"], generate=True))
        if _normalized(fed) != _normalized(ours):
            import difflib

            diff = difflib.unified_diff(_normalized(ours).splitlines(), _normalized(fed).splitlines(), lineterm="")
            pytest.fail("the kernel feeds something else:\n" + "\n".join(list(diff)[:40]))
        query = LlmosDialect().parse(turns[2].text.split("<|call|>")[1].split("<|/call|>")[0]).arguments["query"]
        company = query.removesuffix(" funding rounds")
        assert reference.validate_run(result.folder, company, archive=world.root) == []


def world_specs():
    from llmos_tiny.world import tool_specs

    return tool_specs(curriculum.DEMO_TOOLS)


def test_world_tool_errors_are_results() -> None:
    with World() as world:
        result = world.call("open", url="https://nowhere.example.com/page")
        assert result.is_error and result.text.startswith("error: ")


@pytest.mark.parametrize("seed", [1, 2])
def test_cell_output_matches_numpy_fit(seed: int) -> None:
    company = funding.random_company(random.Random(seed))
    printed = funding.cell_output(company, "12.5")
    assert printed.startswith("growth x") and "; imputed: " in printed and "; trend " in printed
