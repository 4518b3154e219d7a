"""The images every row of an evaluation sees.

By default: the dataset and evaluation preprocessing a run recorded in its
summary.json ``data`` section, read as data (``compressor.export.gate_images``: never
downloaded, no loader workers), and its validation split, in order, in the run's own
batch size, so the PyTorch row reproduces the run's final validation top-1 exactly.
``--data`` / ``--data-dir`` name another dataset (or the same one moved); settings
the run recorded (image size, synthetic set size and seed) are kept when the dataset
is the run's own.

``--split train`` reads the training split without augmentation (CIFAR: no random
crop or flip; imagefolder: the validation resize and centre crop; synthetic: the
images as generated), in index order.  ``--limit N``: the first N images.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from compressor.choices import BUILT_IN_DATASETS
from compressor.errors import CompressorError
from compressor.data.datasets import DataConfig, load_data

log = logging.getLogger(__name__)

SPLITS = ("val", "train")
DEFAULT_BATCH_SIZE = 128


@dataclass(frozen=True)
class DataChoice:
    """What the user asked for; None: the run's own."""

    dataset: str | None = None
    data_dir: str | None = None
    split: str = "val"
    limit: int | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise CompressorError(f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or self.limit < 1):
            raise CompressorError(f"--limit must be >= 1, got {self.limit}")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or self.batch_size < 1):
            raise CompressorError(f"--batch-size must be >= 1, got {self.batch_size}")


@dataclass
class EvalData:
    """The first ``images`` images of one split, served in batches of ``batch_size``."""

    config: DataConfig
    split: str
    images: int
    batch_size: int
    num_classes: int
    input_size: tuple[int, int, int]
    origin: str  # "run" (summary.json) or "options"
    split_size: int  # images in the whole split (``images`` is less under --limit)
    _split: object

    @property
    def num_batches(self) -> int:
        return math.ceil(self.images / self.batch_size)

    def batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        # at most the images there are: torch's split overflows on a --batch-size past 2**63 (a traceback)
        index = list(torch.arange(self.images).split(min(self.batch_size, max(self.images, 1))))
        for images, labels in self._split.batches(index, None):  # None: no augmentation seeds
            yield images.float(), labels

    def describe(self) -> dict:
        return {"dataset": self.config.dataset, "data_dir": self.config.data_dir, "split": self.split,
                "images": self.images, "batch_size": self.batch_size, "num_classes": self.num_classes,
                "input_size": list(self.input_size), "from": self.origin, "split_size": self.split_size}


def eval_data(choice: DataChoice, run_dir: Path | None, model_input_size=None) -> EvalData:
    """Open the data ``choice`` names (the run's when it names none).  ``model_input_size``
    (C, H, W) sets imagefolder's crop when neither the run nor the options say it."""
    run_config, why_not = _run_config(run_dir)
    if choice.dataset is None and choice.data_dir is None:
        if run_config is None:
            raise CompressorError(f"no data to evaluate on: {why_not}; pass --data "
                                  "synthetic|cifar10|cifar100|imagefolder (and --data-dir for the real ones)")
        config, origin = run_config, "run"
    else:
        config, origin = _chosen_config(choice, run_config, why_not, model_input_size), "options"
    batch_size = choice.batch_size or (run_config.batch_size if origin == "run" else DEFAULT_BATCH_SIZE)
    # batch_size 1 for the loader: load_data refuses a batch larger than the training set, and
    # eval's batches are cut here anyway.
    config = replace(config, download=False, workers=0, pin_memory=False, augment=False, batch_size=1)
    try:
        bundle = load_data(config)
    except CompressorError as error:  # load_data's advice names prune's --download; eval never downloads
        message = str(error).replace("pass --download or point --data-dir", "point --data-dir")
        raise CompressorError(message.replace("pass --download or ", "")) from error
    split = bundle.val_split if choice.split == "val" else bundle.train_split
    available = len(split)
    if available == 0:
        raise CompressorError(f"the {choice.split} split of {where(config)} has no images")
    images = min(available, choice.limit or available)
    return EvalData(replace(config, batch_size=batch_size), choice.split, images, batch_size, bundle.num_classes,
                    tuple(bundle.input_size), origin, available, split)


def where(config: DataConfig) -> str:
    return config.dataset if config.data_dir is None else f"{config.dataset} in {config.data_dir}"


def _run_config(run_dir: Path | None) -> tuple[DataConfig | None, str]:
    if run_dir is None:
        return None, "SOURCE is not a `compress prune` run (no summary.json records a dataset)"
    from compressor.runfiles.rundir import run_data_config

    try:
        return run_data_config(run_dir), ""
    except (CompressorError, OverflowError, ValueError, TypeError) as error:
        return None, str(error)


def _chosen_config(choice: DataChoice, run_config: DataConfig | None, why_not: str, model_input_size) -> DataConfig:
    dataset = choice.dataset or (run_config.dataset if run_config is not None else None)
    if dataset is None:
        raise CompressorError(f"--data-dir without --data, and {why_not}; pass --data as well")
    if dataset in BUILT_IN_DATASETS and choice.data_dir is not None:
        raise CompressorError(f"--data-dir does not apply to {dataset} (it comes with the package); drop it, "
                              "or name the dataset that lives there with --data")
    if run_config is not None and run_config.dataset == dataset:
        config = run_config  # the run's image size, synthetic sizes and seed
    else:
        image_size = None
        if dataset == "imagefolder" and model_input_size is not None:
            image_size = int(model_input_size[-1])
        config = DataConfig(dataset=dataset, image_size=image_size)
    if choice.data_dir is not None:
        config = replace(config, data_dir=choice.data_dir)
    if dataset in ("cifar10", "cifar100", "imagefolder") and config.data_dir is None:
        raise CompressorError(f"--data {dataset} needs --data-dir (eval never downloads)")
    return config
