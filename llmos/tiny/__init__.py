"""llmos-tiny: the small offline default model, trained here and shipped as ``llmos-tiny.gguf``.

Modules: :mod:`~llmos.tiny.curriculum` (training conversations), :mod:`~llmos.tiny.tokenizer`
(byte-level BPE matching llama.cpp), :mod:`~llmos.tiny.model` (PyTorch llama),
:mod:`~llmos.tiny.train`, :mod:`~llmos.tiny.export` (GGUF) and :mod:`~llmos.tiny.build`
(everything in one call; ``python -m llmos.tiny build --out DIR``). Importing this
package imports nothing heavy; torch is needed only to train.
"""

from pathlib import Path

BUNDLED_MODEL = Path(__file__).with_name("llmos-tiny.gguf")
