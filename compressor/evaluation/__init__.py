"""``compress eval``: accuracy of what you ship, measured on real images.

A pruned model is exported, converted to FP16, perhaps built into a TensorRT engine;
each step is checked against PyTorch on a few batches, but only a full pass over the
validation set says what accuracy a deployment gets.  This package runs that pass for
every artifact at once, on the very same preprocessed batches:

* ``subjects``  SOURCE -> what to evaluate: a run directory (model.pt and its export),
                a pruned model file, an export directory (every artifact its
                manifest lists), or ONNX files
* ``data``      which images: the run's own dataset and evaluation preprocessing (read
                from summary.json as data, never downloaded) or ``--data``
* ``runners``   one callable per backend: PyTorch fp32 on the CPU, ONNX Runtime,
                TensorRT; each maps a batch of images to its logits
* ``metrics``   top-1, top-5, cross-entropy, agreement with the PyTorch row
* ``report``    ``EvalReport``: the table, the JSON, the manifest's evaluation section
* ``api``       ``evaluate(source, ...) -> EvalReport``, what the CLI calls

Importing this package loads torch; the CLI imports it inside the command.
"""
from compressor.evaluation.api import evaluate
from compressor.evaluation.report import EvalReport, EvalRow

__all__ = ["EvalReport", "EvalRow", "evaluate"]
