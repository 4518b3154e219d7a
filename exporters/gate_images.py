"""Real images for the parity gate: the start of the validation split a run was trained on.

Random inputs exercise every op but not the input distribution the model will see;
a branch or a numerical edge that only real images reach would pass a ``randn``
gate.  A run directory's ``summary.json`` records its data settings, and they are
read as data: a dataset is opened only from the directory recorded there, never
downloaded, with the run's own evaluation preprocessing.  When the images cannot be
had (an older run, a dataset that has moved), the gate runs without them and the
manifest says why.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from compressor.runfiles.rundir import run_data_config
from compressor.errors import CompressorError, one_line

log = logging.getLogger(__name__)


def run_images(run_dir: Path | None, count: int, input_size) -> tuple[torch.Tensor | None, dict]:
    """Up to ``count`` validation images of the run in ``run_dir`` and a note for the manifest."""
    if run_dir is None or count == 0:
        return None, {"used": 0, "reason": "the source is not a run directory" if count else "disabled"}
    try:
        config = run_data_config(run_dir)
        images = _first_val_images(config, count)
    except (CompressorError, OverflowError, ValueError, TypeError, MemoryError) as error:
        reason = str(error) if isinstance(error, CompressorError) else one_line(error)
        log.warning("parity gate without dataset images: %s", reason)
        return None, {"used": 0, "reason": reason}
    if tuple(images.shape[1:]) != tuple(input_size):
        reason = f"the run's images are {tuple(images.shape[1:])}, the export's input {tuple(input_size)}"
        return None, {"used": 0, "reason": reason}
    return images, {"used": len(images), "dataset": config.dataset, "split": "val", "data_dir": config.data_dir}


def _first_val_images(config, count: int) -> torch.Tensor:
    from compressor.data.datasets import load_data

    bundle = load_data(config)
    taken, size = [], 0
    for images, _ in bundle.val_batches():
        taken.append(images[: count - size])
        size += len(taken[-1])
        if size >= count:
            break
    if not taken:
        raise CompressorError("the run's validation split is empty")
    return torch.cat(taken).float()
