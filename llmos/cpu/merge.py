"""A LoRA adapter folded into its base model: one GGUF that llama.cpp runs with no adapter (issue 25).

llama.cpp applies an adapter at every step as two extra small matrix products per layer;
folding it into the weights once (``W + alpha/rank · B A``) gives a file that decodes at the
base model's speed. :func:`merged_model` builds that file once into ``$LLMOS_HOME/models/merged``
(named by the adapter's and the base's hashes and the type, so a new adapter gets a new file and
the old one's merge is removed) and returns its path; :func:`merge` does the work.

Contract
--------
* Works in GGUF space: an adapter tensor pair ``blk.N.attn_q.weight.lora_a`` / ``.lora_b``
  (what :func:`llmos_tiny.smol.export_lora` and llama.cpp's converter write, already permuted as
  the base) adapts the base tensor ``blk.N.attn_q.weight``; scale ``alpha / rank`` as llama.cpp
  applies an adapter at strength 1.0.
* Adapted tensors are dequantized (``gguf.quants``), merged in float32 and written in ``qtype``
  (:data:`MERGED_TYPE`, chosen by ``benchmarks/smol_speed.py``: see its figures in the README).
  Every other tensor and every metadata field is copied byte for byte (``general.file_type``
  follows ``qtype``).
* The file is written beside its final name and renamed into place, so a crash or a second
  process never leaves a half-written model where a reader would load it.
* Needs the ``gguf`` package (the ``llama`` extra); :func:`merged_model` returns None when it is
  missing and the caller applies the adapter at run time instead.

Not covered: adapters with more than one LoRA per tensor, aLoRA, ``general.alignment`` other
than the default, split GGUF files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np  # comes with llama-cpp-python

# The type of the merged tensors. Q8_0 keeps the adapter's small deltas (a Q4_1 merge rounds
# many of them away) and decodes faster than base + adapter: benchmarks/smol_speed.py measures both.
MERGED_TYPE = "Q8_0"
_FILE_TYPES = {"F16": 1, "Q4_1": 3, "Q8_0": 7}  # llama.cpp's LLAMA_FTYPE_MOSTLY_*


def merged_model(base: Path, adapter: Path, qtype: str = MERGED_TYPE, folder: Path | None = None) -> Path | None:
    """The merged file of ``adapter`` over ``base`` (built on first use), or None without ``gguf``."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        return None
    if folder is None:
        from llmos_tools.cache import llmos_home

        folder = llmos_home() / "models" / "merged"
    from llmos.pull import sha256_of

    key = hashlib.sha256((sha256_of(base) + sha256_of(adapter) + qtype).encode()).hexdigest()[:16]
    stem = f"{adapter.name.removesuffix('.gguf').removesuffix('.lora')}-{qtype}"
    path = folder / f"{stem}-{key}.gguf"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            merge(base, adapter, partial, qtype)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        # the merges of this adapter's earlier versions (or of another base) are dead weight, 145 MB
        # each for llmos-smol; a process that has one open keeps reading it (unlinked, still mapped)
        for stale in folder.glob(f"{stem}-*.gguf"):
            if stale != path:
                stale.unlink(missing_ok=True)
    return path


def merge(base: Path, adapter: Path, out: Path, qtype: str = MERGED_TYPE) -> None:
    """Write ``base`` with ``adapter`` folded into its weights to ``out`` (see the module docstring)."""
    import gguf

    model, lora = gguf.GGUFReader(str(base)), gguf.GGUFReader(str(adapter))
    deltas = _deltas(lora)
    names = {tensor.name for tensor in model.tensors}
    if unknown := sorted(set(deltas) - names):
        raise ValueError(f"{adapter}: adapts tensors the base model does not have: {unknown[:3]}")
    target = gguf.GGMLQuantizationType[qtype]
    arch = model.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(out), arch)
    _copy_metadata(model, writer, gguf, _FILE_TYPES[qtype])
    tensors: list[tuple[str, Any, Any]] = []
    for tensor in model.tensors:
        if tensor.name in deltas:
            a, b, scale = deltas[tensor.name]
            weight = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
            weight += scale * (b @ a)
            data = gguf.quants.quantize(weight, target)
            tensors.append((tensor.name, data, target))
        else:
            tensors.append((tensor.name, tensor.data, tensor.tensor_type))
    for name, data, kind in tensors:
        writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes, kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, data, _ in tensors:
        writer.write_tensor_data(data)
    writer.close()


def _deltas(lora: Any) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """``{base tensor name: (A (rank, in), B (out, rank), alpha / rank)}`` of an adapter GGUF."""
    import gguf

    if lora.fields["general.type"].contents() != "adapter":
        raise ValueError("not a LoRA adapter GGUF (general.type is not 'adapter')")
    alpha = float(lora.fields[gguf.Keys.Adapter.LORA_ALPHA].contents())
    parts: dict[str, dict[str, np.ndarray]] = {}
    for tensor in lora.tensors:
        name, _, kind = tensor.name.rpartition(".")
        shape = [int(n) for n in reversed(tensor.shape.tolist())]
        parts.setdefault(name, {})[kind] = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape)
    deltas = {}
    for name, pair in parts.items():
        if set(pair) != {"lora_a", "lora_b"}:
            raise ValueError(f"adapter tensor {name!r} has {sorted(pair)}, not lora_a and lora_b")
        a, b = pair["lora_a"].astype(np.float32), pair["lora_b"].astype(np.float32)
        deltas[name] = (a, b, alpha / a.shape[0])
    return deltas


def _copy_metadata(model: Any, writer: Any, gguf: Any, file_type: int) -> None:
    for field in model.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue  # the writer writes these itself
        value = file_type if field.name == "general.file_type" else field.contents()
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, field.types[0], sub_type=sub_type)
