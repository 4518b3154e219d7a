"""A run's data settings, read back from its ``summary.json`` for export, eval and the bundle.

They are read as data: a value of the wrong type is refused (``compressor.arguments``),
nothing is ever downloaded (``download`` is forced off), no loader process is forked, and
a tampered synthetic size cannot make a reader allocate without bound.
"""
from __future__ import annotations

import json
from pathlib import Path

from compressor.arguments import typed_config
from compressor.artifacts import SUMMARY_FILE
from compressor.data.datasets import DataConfig
from compressor.errors import CompressorError

# The synthetic set is regenerated whole (its normalisation uses the training images): a
# tampered summary.json must not make a reader allocate without bound.
MAX_SYNTHETIC_IMAGES = 200_000


def run_data_config(run_dir: Path) -> DataConfig:
    """The ``DataConfig`` the run in ``run_dir`` trained on, safe to open for reading."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():  # a FIFO (or device) would block the read forever; a folder is no summary
        raise CompressorError(f"cannot read {path}: not a regular file")
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as error:  # RecursionError: JSON nested thousands deep
        raise CompressorError(f"cannot read {path}: {error}") from error
    data = summary.get("data") if isinstance(summary, dict) else None
    if not isinstance(data, dict):
        raise CompressorError(f"{path} does not record the run's dataset (a run made before exports read it)")
    settings = {**data, "download": False, "workers": 0}  # never fetch anything, never fork for a few images
    config = typed_config(DataConfig, settings, where=f"{path} data")
    if config.dataset == "synthetic" and config.synthetic_train + config.synthetic_val > MAX_SYNTHETIC_IMAGES:
        raise CompressorError(f"{path} asks for {config.synthetic_train + config.synthetic_val} synthetic images, "
                              f"more than the {MAX_SYNTHETIC_IMAGES} the readers regenerate")
    return config
