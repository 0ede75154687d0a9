"""Task files: validation at the edge, line numbers in messages, the published schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from llmos_shell.task import TaskError, load_task, schema_text

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "task.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_task_stays_valid():
    task = load_task(REPO / "examples" / "loop-demo.yaml")
    assert task.tool_names() == ["calculator"] and task.force_call and task.n_ctx == 512
    assert task.kernel_budgets().max_steps == 2 and task.kernel_budgets().max_step_tokens == 100
    assert Path(task.model).is_absolute() and task.model.endswith("stories260K.gguf")


def test_a_full_task_becomes_kernel_inputs(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    task = load_task(
        write(
            tmp_path,
            "prompt: Plot it\n"
            "model: http://127.0.0.1:8080\n"
            "tools: {calculator: allow, python: ask, browser: deny}\n"
            "ingest: [notes.txt]\n"
            "web: archive:web\n"
            "budgets: {steps: 3, tokens: 500, seconds: 20}\n"
            "outputs: [plot.png]\n"
            "checks:\n  - answer_matches: '\\d+'\n  - file_exists: artifacts/plot.png\n",
        )
    )
    assert task.tool_names() == ["calculator", "python"]
    assert task.policy_overrides() == {"calculator": "allow", "python": "ask", "browser": "deny"}
    settings = task.kernel_settings()
    assert settings["ingest"] == [str(tmp_path / "notes.txt")]
    assert settings["web"] == f"archive:{tmp_path / 'web'}"
    assert task.model == "http://127.0.0.1:8080" and task.kernel_budgets().max_seconds == 20


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prompt: hi\nmodle: x\n", "task.yaml:2: unknown key 'modle'; did you mean 'model'?"),
        ("prompt: hi\nbudgets:\n  steps: 2\n  tokenz: 9\n", "task.yaml:4: unknown key 'budgets.tokenz'; did you mean"),
        ("prompt: hi\nchecks:\n  - answer_match: x\n", "task.yaml:3: unknown key 'checks.0.answer_match'; did you"),
        ("prompt: hi\npolicy:\n  taint: everywhere\n", "task.yaml:2: policy: policy.taint must be"),
        ("model: x\n", "'prompt' is required"),
        ("prompt: hi\nweb: sometimes\n", "task.yaml:2: web: web must be 'live' or 'archive:PATH'"),
        ("prompt: hi\nchecks:\n  - answer_matches: '('\n", "task.yaml:3"),
        ("prompt: hi\nchecks:\n  - file_exists: ../../etc/passwd\n", "inside the run folder"),
        ("prompt: hi\ntools: {python: maybe}\n", "task.yaml:2"),
        ("prompt: [unclosed\n", "not valid YAML"),
        ("- a list\n", "must be a mapping"),
    ],
)
def test_bad_task_files_say_where_and_why(tmp_path, text, message):
    with pytest.raises(TaskError) as caught:
        load_task(write(tmp_path, text))
    assert message in str(caught.value)


def test_the_published_schema_is_up_to_date():
    published = (REPO / "docs" / "task.schema.json").read_text(encoding="utf-8")
    assert published == schema_text(), "regenerate: python -m llmos_shell.task > docs/task.schema.json"
    assert json.loads(published)["additionalProperties"] is False


def test_model_names_stay_names_and_paths_resolve_against_the_task_file(tmp_path):
    """``smollm2`` (a packaged model), fine-tunes, llmos-tiny and pulled short names are names, not files
    beside the task."""
    names = ("smollm2", "llmos-smol", "llmos-tiny", "qwen2.5-0.5b", "default", "http://127.0.0.1:8080", "hf:o/r/f.gguf")
    for name in names:
        (tmp_path / "t.yaml").write_text(f"prompt: hi\nmodel: {name}\n")
        assert load_task(tmp_path / "t.yaml").model == name
    (tmp_path / "t.yaml").write_text("prompt: hi\nmodel: models/mine.gguf\n")
    assert load_task(tmp_path / "t.yaml").model == str(tmp_path / "models/mine.gguf")


def test_a_task_sets_only_the_sampling_fields_it_names_over_the_models_own(tmp_path):
    import dataclasses

    from llmos.cpu.base import Sampling
    from llmos.models import FINE_TUNES, model_sampling

    own = Sampling(dry_multiplier=0.8, dry_allowed_length=4)
    assert load_task(write(tmp_path, "prompt: hi\n")).cpu_sampling(own) == own
    task = load_task(write(tmp_path, "prompt: hi\nsampling: {temperature: 0.5, dry_multiplier: 0}\n"))
    assert task.cpu_sampling(own) == dataclasses.replace(own, temperature=0.5, dry_multiplier=0.0)
    assert task.cpu_sampling() == Sampling(temperature=0.5)
    assert model_sampling("smollm2") == Sampling() and model_sampling("llmos-tiny") == Sampling()
    assert model_sampling("llmos-smol") == Sampling(**FINE_TUNES["llmos-smol"].sampling)
    assert model_sampling(None) == model_sampling("default") == model_sampling("llmos-smol")  # the default
