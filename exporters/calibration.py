"""Images for INT8 calibration, and the held-out images its accuracy gate runs on.

Both come from the *training* split, un-augmented, never from the validation split:
the validation split is what ``compress eval`` reports accuracy on, and ranges fitted to
it would flatter that number.  One seeded permutation of the training split is cut in
two disjoint parts: the first ``samples`` images calibrate, the next ``check`` images
judge the result, so the gate never sees an image the ranges were fitted to.

The dataset is the run's own (its ``summary.json`` records it, read as data: opened from
the directory recorded there, never downloaded) unless ``--calib-data`` names another.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from compressor.choices import BUILT_IN_DATASETS
from compressor.errors import CompressorError
from compressor.export.config import MIN_INT8_CHECK_IMAGES

# Seed of the permutation that splits the training set into calibration and check images;
# fixed so that an export is reproducible and independent of the run's training seed.
SPLIT_SEED = 20261204
# Calibration and held-out images are held in memory (and ONNX Runtime's calibrator keeps every
# activation of the calibration images): past this the export is refused before loading any.
MAX_IMAGE_BYTES = 4 << 30


@dataclass(frozen=True)
class CalibrationSets:
    """Calibration images, disjoint held-out images from the same split, and where they came from."""

    calibration: torch.Tensor
    check: torch.Tensor
    note: dict


def data_config_for(run_dir: Path | None, dataset: str | None, data_dir: str | None, input_size=None):
    """The ``DataConfig`` to calibrate from: ``dataset`` when given (an image folder cropped to
    ``input_size``), else the run's own data."""
    from compressor.runfiles.rundir import run_data_config
    from compressor.data.datasets import DataConfig

    if dataset is not None:
        if dataset not in BUILT_IN_DATASETS and data_dir is None:
            # else load_data reads ./data of wherever the command runs, and advises prune's --download
            raise CompressorError(f"--calib-data {dataset} needs --calib-data-dir (export never downloads)")
        if dataset in BUILT_IN_DATASETS and data_dir is not None:
            raise CompressorError(f"--calib-data-dir does not apply to --calib-data {dataset} (it comes with the "
                                  "package); drop it")
        size = input_size[-1] if dataset == "imagefolder" and input_size else None
        return DataConfig(dataset=dataset, data_dir=data_dir, download=False, workers=0, augment=False,
                          image_size=size)
    if data_dir is not None:
        raise CompressorError("--calib-data-dir needs --calib-data (the dataset kind: cifar10, imagefolder, ...)")
    if run_dir is None:
        raise CompressorError(
            "--int8 needs calibration images: SOURCE is not a `compress prune` run directory, so name them with "
            "--calib-data (and --calib-data-dir)"
        )
    return replace(run_data_config(run_dir), augment=False)


def calibration_sets(config, samples: int, check: int, input_size) -> CalibrationSets:
    """``samples`` calibration images and up to ``check`` held-out ones from the training split."""
    from compressor.data.datasets import load_data

    needed = (samples + MIN_INT8_CHECK_IMAGES) * 4 * int(torch.tensor(input_size).prod())
    if needed > MAX_IMAGE_BYTES:
        raise CompressorError(
            f"--calib-samples {samples} at {_shape(input_size)} needs {needed / 2**30:.1f} GiB of images in memory "
            f"(at most {MAX_IMAGE_BYTES / 2**30:.0f} GiB); lower --calib-samples (a few hundred images calibrate well)"
        )
    try:
        bundle = load_data(replace(config, augment=False, batch_size=1))
    except CompressorError as error:  # load_data's advice names prune's options; export has neither
        message = str(error).replace("pass --download or ", "").replace("--data-dir", "--calib-data-dir")
        raise CompressorError(message.replace("needs --calib-data-dir", "needs --calib-data-dir (with --calib-data)")) \
            from error
    if tuple(bundle.input_size) != tuple(input_size):
        raise CompressorError(
            f"the calibration data ({config.dataset}) has {_shape(bundle.input_size)} images but the model takes "
            f"{_shape(input_size)}; calibrate on data of the model's input size (--calib-data)"
        )
    available = bundle.train_size - samples
    if available < MIN_INT8_CHECK_IMAGES:
        raise CompressorError(
            f"the training split of {config.dataset} has {bundle.train_size} images: too few for --calib-samples "
            f"{samples} plus the {MIN_INT8_CHECK_IMAGES} held-out images the INT8 gate needs; lower --calib-samples"
        )
    check = min(check, available)
    order = torch.randperm(bundle.train_size, generator=torch.Generator().manual_seed(SPLIT_SEED))
    images = _take(bundle, order[: samples + check])
    note = {"dataset": config.dataset, "data_dir": config.data_dir, "split": "train", "augmented": False,
            "samples": samples, "check_images": check, "split_seed": SPLIT_SEED}
    return CalibrationSets(images[:samples], images[samples:], note)


def _take(bundle, index: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    parts = [images for images, _ in bundle.train_split.batches(list(index.split(chunk)), None)]
    return torch.cat(parts).float()


def _shape(size) -> str:
    return "x".join(str(d) for d in size)
