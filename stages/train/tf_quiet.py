"""Import TensorFlow without the start-up noise that users read as failures.

On a machine without a GPU, TensorFlow 2.16's import prints three `E ... Unable to register
cuFFT/cuDNN/cuBLAS factory` lines (a known double registration of its CUDA plugins, harmless),
plus notes about missing CUDA drivers, TensorRT and CPU instructions. `import_tensorflow()`
imports it with the process's stderr (file descriptor 2, where TensorFlow's C++ logging writes)
captured, drops exactly those known lines and writes every other line back, so a real error at
import still shows. Later log lines are untouched. Call it before anything imports TensorFlow.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from types import ModuleType

_NOISE = re.compile(
    rb"Unable to register cu(FFT|DNN|BLAS) factory"
    rb"|Could not find cuda drivers on your machine"
    rb"|oneDNN custom operations are on"
    rb"|TF-TRT Warning: Could not find TensorRT"
    rb"|This TensorFlow binary is optimized to use available CPU instructions"
    rb"|^To enable the following instructions: .* rebuild TensorFlow"
    rb"|computation placer already registered"
)


def import_tensorflow() -> ModuleType:
    """`import tensorflow`, its known start-up noise filtered out (see the module docstring)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().splitlines(keepends=True)
                    if not _NOISE.search(line)]
            if kept:
                sys.stderr.buffer.write(b"".join(kept))
                sys.stderr.flush()
    return tensorflow
