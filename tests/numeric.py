"""What a test may claim about two runtimes' outputs of the same model.

Two runtimes (PyTorch and ONNX Runtime, or one runtime's AVX2 and AVX-512 kernels) sum
in different orders, so each score may move by the numeric bound ``atol + rtol * |score|``.
Where a sample's two best reference scores are closer than their two bounds together, either
class may come out on top and neither runtime is wrong: a random-init EfficientNet's logits
are that close, and an exact top-1 assertion on them failed on AVX-512 CPUs only.  So top-1
is judged on the decisive samples alone, and at least one sample must be decisive, else the
check would judge nothing.
"""
from __future__ import annotations

import numpy as np


def decisive(reference: np.ndarray, atol: float, rtol: float) -> np.ndarray:
    """Per sample (rows of ``reference``, classes along axis 1): is the top-2 margin wider than
    the two scores' numeric bounds together?"""
    top2 = np.sort(np.asarray(reference, dtype=np.float64), axis=1)[:, -2:]
    bounds = (atol + rtol * np.abs(top2)).sum(axis=1)
    return top2[:, 1] - top2[:, 0] > bounds


def assert_top1_agrees_where_decisive(reference: np.ndarray, output: np.ndarray, atol: float, rtol: float) -> None:
    rows = decisive(reference, atol, rtol)
    assert rows.any(), "no sample has a top-2 margin beyond the numeric bound: top-1 cannot be judged"
    disagree = np.flatnonzero(rows & (np.argmax(output, axis=1) != np.argmax(reference, axis=1)))
    assert disagree.size == 0, f"top-1 differs on decisive samples {disagree.tolist()}"
