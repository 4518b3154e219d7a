"""The names the CLI offers as choices, kept free of heavy imports.

``compress --help`` must not import torch (seconds), yet its ``click.Choice`` lists
come from registries that live in torch-importing modules.  The names live here,
once; those modules build their registries from these tuples (and refuse at import
if a name has no implementation), so the help text and the code cannot drift apart.
"""
from __future__ import annotations

DATASETS = ("digits", "synthetic", "cifar10", "cifar100", "imagefolder")
# The datasets that come with the package (shipped or generated): they need no --data-dir.
BUILT_IN_DATASETS = ("digits", "synthetic")
# The pruning criteria, by what they can do (one table of implementations:
# compressor.engine.importance.CRITERIA).  --criterion: scores every channel, ranked
# across groups.  --criteria-pool (laasp): ranks one group's filters; the default pool.
CRITERIA = ("ocs", "l2", "l1", "bn-scale", "taylor", "random")
POOL_CRITERIA = ("l1", "l2", "euclidean", "cosine")
# The --schedule names are not here: users add their own (compressor.schedules.registry, torch-free too).
# How ocs sets the shrink's strength (compressor.schedules.shrink_control): to reach a
# target by the prune cap, or the authors' constant schedule.
REG_SCHEDULES = ("target", "fixed")
OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("step", "cosine", "onecycle")
AMP_MODES = ("none", "bf16", "fp16")
# compress bench --backend; also what --round-to auto can measure for (--deploy-backend
# offers these same names), and the one it measures for unless told.
BENCH_BACKENDS = ("torch", "torch-compile", "onnxruntime", "onnxruntime-cuda", "onnxruntime-trt", "tensorrt")
DEFAULT_DEPLOY_BACKEND = "onnxruntime"
# compress bench --precision (int8: the QDQ ONNX, timed on the ONNX backends and TensorRT).
BENCH_PRECISIONS = ("fp32", "fp16", "int8")
# --seed: numpy's SeedSequence and torch's generators take any value up to here; past it
# they overflow deep inside a run.
MAX_SEED = 2**32 - 1


def registry(names: tuple[str, ...], implementations: dict, what: str) -> dict:
    """``implementations`` in the order of ``names``; refuses a name without one, or one too many."""
    missing = [n for n in names if n not in implementations]
    extra = [n for n in implementations if n not in names]
    if missing or extra:
        raise ImportError(f"{what}: compressor.choices and the implementations disagree "
                          f"(no implementation: {missing}; not in compressor.choices: {extra})")
    return {name: implementations[name] for name in names}
