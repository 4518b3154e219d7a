"""ONNX Runtime in one place: its provider names, which providers this build has, and how a
session is opened -- for the export gate (``parity``, ``int8``), ``compress eval``
(``compressor.evaluation.runners``) and ``compress bench`` (``compressor.bench.backends.onnxruntime``).

Every session gets the same two guarantees: ONNX Runtime's own log stays quiet (an error comes
back as one exception, reported in one line, not a second coloured line on stderr), and the
session really got the provider asked for (ORT falls back to the CPU silently, and a misspelt
provider name is not an error there either: the names are spelled here and nowhere else).
A verification or evaluation session does not busy-wait on cores other work needs; a timed
one (``timed=True``) runs as a deployment would: every graph optimisation, its own threads.

No import of onnxruntime at module level: the CLI's help and the bench backends' table read
the names without loading it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

ORT_CPU = "CPUExecutionProvider"
ORT_CUDA = "CUDAExecutionProvider"
ORT_TENSORRT = "TensorrtExecutionProvider"


def available_providers() -> list[str]:
    """The providers this onnxruntime build has; [] when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except Exception:  # noqa: BLE001 - a missing or broken install: no provider at all
        return []
    return list(ort.get_available_providers())


def preferred_provider() -> str:
    """CUDA when ONNX Runtime has the provider and PyTorch sees a GPU, else the CPU."""
    import torch

    if ORT_CUDA in available_providers() and torch.cuda.is_available():
        return ORT_CUDA
    return ORT_CPU


def open_session(path: Path, provider: str = ORT_CPU, name: str | None = None, *, timed: bool = False,
                 threads: int | None = None, config_entries: dict | None = None, provider_options: dict | None = None):
    """An ONNX Runtime session of ``path`` that really got ``provider``.  Refusals are one
    ``CompressorError`` naming the file (``name``, default its file name)."""
    import onnxruntime as ort

    from compressor.errors import CompressorError, one_line

    name = name or path.name
    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: see the module's docstring
    if timed:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    else:  # a verification run, not a benchmark: do not busy-wait on cores other work may need
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for key, value in (config_entries or {}).items():
        options.add_session_config_entry(key, value)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=[provider],
                                       provider_options=[dict(provider_options or {})])
    except Exception as error:  # noqa: BLE001 - ORT's load errors are the model's (or provider's) fault
        raise CompressorError(f"ONNX Runtime cannot load {name}: {one_line(error)}") from error
    got = session.get_providers()
    if not got or got[0] != provider:
        raise CompressorError(f"ONNX Runtime session for {name} got providers {got}, not {provider}")
    return session


def session_runner(session, name: str) -> Callable:
    """``session`` as a runner (torch tensor in, one numpy array per output out), each run
    stopped past the time limit (``RunLimit``; ``name``: the file)."""
    import numpy as np

    from compressor.export.runlimit import RunLimit

    limit = RunLimit(name)
    input_name = session.get_inputs()[0].name

    def run(x) -> list:
        outputs = limit(lambda options: session.run(None, {input_name: x.numpy()}, options))
        return [np.asarray(y) for y in outputs]

    return run
