"""llmos-tiny: the small offline default model, trained here and shipped as ``llmos-tiny.gguf``.

Modules: :mod:`~llmos_tiny.curriculum` (training conversations), :mod:`~llmos_tiny.tokenizer`
(byte-level BPE matching llama.cpp), :mod:`~llmos_tiny.model` (PyTorch llama),
:mod:`~llmos_tiny.train`, :mod:`~llmos_tiny.export` (GGUF) and :mod:`~llmos_tiny.build`
(everything in one call; ``python -m llmos_tiny build --out DIR``); :mod:`~llmos_tiny.smol`
reads SmolLM2's GGUF into PyTorch (the base of the llmos-smol fine-tune, issue 25). Importing this
package imports nothing heavy; torch is needed only to train.
"""

from pathlib import Path

BUNDLED_MODEL = Path(__file__).with_name("llmos-tiny.gguf")
