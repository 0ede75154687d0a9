"""The llmos-smol adapter folded into SmolLM2 (llmos.cpu.merge), checked with real llama.cpp.

The merged file must compute what the base with the adapter applied at run time computes, be
built once and reused, and refuse files that are not what they claim to be.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import smollm2_model

from llmos.cpu.merge import merge, merged_model
from llmos.models import FINE_TUNES, local_model
from llmos.testing import llama_logits

TEXT = (
    "<|im_start|>user\nWhat is 15% of 1,240?<|im_end|>\n<|im_start|>assistant\n"
    "Let me calculate that. The mean valuation/amount ratio of the rounds is 12.5."
)


def _logits(model: Path, lora: Path | None = None) -> np.ndarray:
    return llama_logits(model, TEXT, lora, n_ctx=256)[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path, Path]:
    base, adapter = smollm2_model(), FINE_TUNES["llmos-smol"].files()[1]
    merged = merged_model(base, adapter, folder=tmp_path_factory.mktemp("merged"))
    assert merged is not None
    return base, adapter, merged


def test_the_merged_file_computes_what_the_adapter_at_run_time_computes(files) -> None:
    base, adapter, merged = files
    at_run_time, folded, alone = _logits(base, adapter), _logits(merged), _logits(base)
    # not bit-exact (the run-time path adds the adapter to Q4_1 products, the merged file is Q8_0):
    # measured on these 44 positions (the disagreements are near-ties): top-1 agreement 0.93 and
    # correlation 0.9993 for the seed-31 adapter, 0.977 and 0.9990 for seed 45 (larger updates, so
    # more for Q8_0 to round; mean |difference| 0.30 logits against 3.80 between base and adapter)
    assert np.mean(folded.argmax(-1) == at_run_time.argmax(-1)) >= 0.9
    assert np.corrcoef(folded.ravel(), at_run_time.ravel())[0, 1] >= 0.998
    # the adapter is really in it: the merged logits sit nearer the adapter's than the base's
    assert np.abs(folded - at_run_time).mean() < 0.5 * np.abs(alone - at_run_time).mean()


def test_it_is_built_once_and_named_by_what_went_into_it(files, tmp_path) -> None:
    base, adapter, merged = files
    built = merged.stat().st_mtime_ns
    assert merged_model(base, adapter, folder=merged.parent) == merged
    assert merged.stat().st_mtime_ns == built  # reused, not rebuilt
    assert not list(merged.parent.glob(".*partial"))  # nothing half-written left behind
    other = tmp_path / "other.lora.gguf"
    other.write_bytes(adapter.read_bytes() + b"\0")  # another adapter: another file
    assert merged_model(base, other, folder=merged.parent) not in (merged, None)
    assert merged.is_file()  # another adapter's merge stays


def test_a_new_version_of_an_adapter_replaces_the_old_versions_merge(files, tmp_path) -> None:
    base, adapter, _ = files
    (tmp_path / "v1").mkdir(), (tmp_path / "v2").mkdir()
    first, second = tmp_path / "v1" / adapter.name, tmp_path / "v2" / adapter.name
    first.write_bytes(adapter.read_bytes())
    second.write_bytes(adapter.read_bytes() + b"\0")  # the same adapter's next version
    old = merged_model(base, first, folder=tmp_path / "merged")
    new = merged_model(base, second, folder=tmp_path / "merged")
    assert old is not None and new is not None and old != new
    assert list((tmp_path / "merged").iterdir()) == [new]


def test_llmos_smol_opens_the_merged_file_unless_told_not_to(files, monkeypatch) -> None:
    local = local_model("llmos-smol")
    assert local.lora is None and local.path.name.startswith("llmos-smol-Q8_0-")
    monkeypatch.setenv("LLMOS_MERGE", "0")
    local = local_model("llmos-smol")
    assert local.path == files[0] and local.lora == files[1]


def test_a_model_is_not_an_adapter_and_nothing_is_left_behind(files, tmp_path) -> None:
    base = files[0]
    with pytest.raises(ValueError, match="not a LoRA adapter"):
        merged_model(base, base, folder=tmp_path)
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="not a LoRA adapter"):
        merge(base, base, tmp_path / "out.gguf")
