"""Training and validation data for the ``compress prune`` training loop.

Every dataset is served through one deterministic schedule, so a run killed
mid-epoch resumes exactly: epoch ``e`` visits the training set in the order of
``torch.randperm`` drawn from ``torch.Generator().manual_seed(seed * 1000003 + e)``;
rank ``r`` of a world of ``w`` takes the ``r``-th of ``w`` equal shards of that
order (the remainder is dropped so every rank runs the same number of steps) and
cuts it into full batches. Random augmentation is seeded from (seed, epoch, rank,
batch index) rather than drawn from a global generator, so batch ``k`` is the
same tensor whether it is reached by iterating the whole epoch or by resuming at
``start_batch=k``.

Exact resume is promised for ``digits`` and ``synthetic`` (augmented in memory from a per-batch
generator) and for ``cifar*``/``imagefolder`` with ``workers=0``. Those run each
sample's torchvision transform under a seed derived from the batch seed, so in
practice worker processes give the same tensors too (tested for imagefolder);
either way the files on disk must not change between the two runs.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms

from compressor.choices import DATASETS  # named there so that the CLI lists them without torch
from compressor.data import digits
from compressor.errors import CompressorError, one_line

EPOCH_SEED_STRIDE = 1000003
CIFAR_SIZE = 32
CIFAR_PAD = 4
DEFAULT_IMAGE_SIZE = 224
CIFAR_STATS = {  # per-channel mean and std of the training sets
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

# Leading words of the seed derivations; distinct so no two streams coincide.
_AUGMENT_STREAM = 1
_SYNTHETIC_STREAM = 2
_SELECTION_STREAM = 3
_TEMPLATES, _TRAIN, _VAL = 0, 1, 2

# Synthetic difficulty knobs, tuned so a dense ResNet-20 trained for 3 epochs
# on 5000 images lands well between chance and perfect (see `_synthetic`).
SYNTH_CLASSES = 10
SYNTH_GRID = 5  # coarse noise grid per template: smaller = smoother shapes
SYNTH_SHIFT = 8  # translation range in pixels
SYNTH_DISTRACTOR = 0.8  # maximum weight of another class's template
SYNTH_GAIN = 0.4  # per-channel contrast jitter, +-
SYNTH_BRIGHTNESS = 0.3  # std of the per-image brightness offset
SYNTH_CLUTTER = 1.4  # std of a smooth random field per image, in the templates' frequency band
SYNTH_NOISE = 0.6  # std of the per-pixel Gaussian noise


@dataclass(frozen=True)
class DataConfig:
    """What to load and how to batch it; see the module docstring for the schedule."""

    dataset: str = "digits"  # digits | synthetic | cifar10 | cifar100 | imagefolder
    data_dir: str | None = None  # root for cifar*/imagefolder (imagefolder needs train/ and val/ inside)
    download: bool = False  # only cifar*: allow torchvision to download
    batch_size: int = 128
    workers: int | None = None  # DataLoader workers for cifar*/imagefolder; None: loader_workers(device)
    pin_memory: bool = False  # page-locked batches, so copies to a CUDA device can overlap compute
    image_size: int | None = None  # imagefolder crop size (default 224); digits/cifar/synthetic are 32
    synthetic_train: int = 5000  # synthetic set sizes (the CLI default runs in a few minutes on a CPU)
    synthetic_val: int = 1000
    augment: bool = True  # CIFAR: random crop 32 pad 4 + flip; digits: the crop, no flip; imagefolder: RandomResizedCrop + flip
    seed: int = 0
    num_classes: int | None = None  # the model's outputs; None: the dataset's classes (--num-classes)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise CompressorError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        for name in ("batch_size", "synthetic_train", "synthetic_val"):
            if getattr(self, name) < 1:
                raise CompressorError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.workers is not None and self.workers < 0:
            raise CompressorError(f"--workers must be >= 0, got {self.workers}")
        if self.seed < 0:
            raise CompressorError(f"--seed must be >= 0, got {self.seed}")
        if self.image_size is not None and self.dataset != "imagefolder" and self.image_size != CIFAR_SIZE:
            raise CompressorError(f"{self.dataset} images are {CIFAR_SIZE}x{CIFAR_SIZE}; drop --input-size")
        if self.num_classes is not None and self.num_classes < 1:
            raise CompressorError(f"--num-classes must be >= 1, got {self.num_classes}")
        if self.image_size is not None and self.image_size < 1:
            raise CompressorError(f"--input-size must be >= 1, got {self.image_size}")


class _Split(Protocol):
    """One side (train or val) of a dataset: turns index batches into tensor batches."""

    def __len__(self) -> int: ...

    def batches(self, index_batches: list[Tensor], seeds: list[int] | None) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (images, labels) per index batch; ``seeds`` (one per batch) seed random augmentation."""
        ...


@dataclass
class DataBundle:
    """A loaded dataset plus the deterministic schedule that batches it."""

    num_classes: int
    input_size: tuple[int, int, int]
    train_size: int
    val_size: int
    batch_size: int
    seed: int
    train_split: _Split = field(repr=False)
    val_split: _Split = field(repr=False)

    def batches_per_epoch(self, world_size: int = 1) -> int:
        """Training batches one rank gets per epoch (full batches of its equal shard)."""
        count = (self.train_size // world_size) // self.batch_size
        if count == 0:
            raise CompressorError(
                f"with {world_size} rank(s) each gets {self.train_size // world_size} training images, "
                f"fewer than --batch-size {self.batch_size}; lower --batch-size"
            )
        return count

    def train_batches(
        self, epoch: int, start_batch: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches ``start_batch, start_batch + 1, ...`` of this rank's shard of epoch ``epoch``."""
        _check_rank(rank, world_size)
        if start_batch < 0:
            raise CompressorError(f"start_batch must be >= 0, got {start_batch}")
        shard = self._epoch_shard(epoch, rank, world_size)
        steps = range(start_batch, self.batches_per_epoch(world_size))
        indices = [shard[b * self.batch_size:(b + 1) * self.batch_size] for b in steps]
        seeds = [_derive_seed(_AUGMENT_STREAM, self.seed, epoch, rank, b) for b in steps]
        return self.train_split.batches(indices, seeds)

    def val_batches(self, rank: int = 0, world_size: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's contiguous part of the validation set, in order, last partial batch kept.

        Parts differ in size by at most one image but together cover every image
        exactly once, so summed correct counts over ranks give the exact accuracy.
        """
        _check_rank(rank, world_size)
        part = torch.tensor_split(torch.arange(self.val_size), world_size)[rank]
        return self.val_split.batches(list(part.split(self.batch_size)), None)

    def selection_batches(self, count: int) -> list[tuple[Tensor, Tensor]]:
        """A fixed, seeded subset of ``count`` training images, held in memory.

        Loss-aware selection (``--schedule laasp``) compares candidates on it, so it
        must not change between steps: ``synthetic`` images are taken un-augmented;
        a dataset whose transform is random draws it once under a fixed seed.  The
        global random stream is left untouched, so training is the same with or
        without it.
        """
        if count > self.train_size:
            raise CompressorError(
                f"--selection-samples {count} is larger than the training set ({self.train_size} images); "
                "lower --selection-samples"
            )
        generator = torch.Generator().manual_seed(_derive_seed(_SELECTION_STREAM, self.seed))
        index = torch.randperm(self.train_size, generator=generator)[:count]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_derive_seed(_SELECTION_STREAM, self.seed, 1) % 2**63)
            return list(self.train_split.batches(list(index.split(self.batch_size)), None))

    def _epoch_shard(self, epoch: int, rank: int, world_size: int) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed * EPOCH_SEED_STRIDE + epoch)
        order = torch.randperm(self.train_size, generator=generator)
        length = self.train_size // world_size
        return order[rank * length:(rank + 1) * length]


def _loader_splits(config: DataConfig, train: Dataset, val: Dataset) -> tuple[_LoaderSplit, _LoaderSplit]:
    workers = config.workers or 0  # None (not resolved for a device): the main process
    return _LoaderSplit(train, workers, config.pin_memory), _LoaderSplit(val, workers, config.pin_memory)


def loader_workers(device: torch.device) -> int:
    """Loader processes when ``--workers`` is not given: none on a CPU run (they would take
    cores from the training threads); on a GPU enough to keep it fed, one core left over."""
    if device.type != "cuda":
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores - 1))


def for_device(config: DataConfig, device: torch.device) -> DataConfig:
    """``config`` with what depends on where the run trains filled in: the loader workers
    (when not given) and pinned memory (on CUDA)."""
    workers = loader_workers(device) if config.workers is None else config.workers
    return replace(config, workers=workers, pin_memory=device.type == "cuda")


def load_data(config: DataConfig) -> DataBundle:
    """Build the dataset named by ``config`` (generated in memory, or opened from disk)."""
    train, val, num_classes, input_size = _LOADERS[config.dataset](config)
    if config.batch_size > len(train):
        raise CompressorError(
            f"--batch-size {config.batch_size} is larger than the training set ({len(train)} images); "
            "lower --batch-size"
        )
    return DataBundle(num_classes, input_size, len(train), len(val), config.batch_size, config.seed, train, val)


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise CompressorError(f"rank {rank} is not in a world of size {world_size}")


def _derive_seed(*words: int) -> int:
    """A 64-bit seed that is a well-mixed function of ``words`` (numpy's SeedSequence hash)."""
    return int(np.random.SeedSequence(list(words)).generate_state(1, np.uint64)[0])


# --- in-memory tensors (synthetic) ------------------------------------------------------------


@dataclass(frozen=True)
class _TensorSplit:
    """Images held as one float tensor; augmentation runs vectorised per batch.

    ``flip``: mirror half the images (not for digits: a mirrored 2 is no digit);
    ``pad_value``: what the random crop's border shows, the normalised background."""

    images: Tensor
    labels: Tensor
    augment: bool
    flip: bool = True
    pad_value: float = 0.0

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, index_batches: list[Tensor], seeds: list[int] | None) -> Iterator[tuple[Tensor, Tensor]]:
        for position, index in enumerate(index_batches):
            images = self.images[index]
            if self.augment and seeds is not None:
                generator = torch.Generator().manual_seed(seeds[position])
                images = _random_crop(images, generator, self.pad_value)
                images = _random_flip(images, generator) if self.flip else images
            yield images, self.labels[index]


def _crop(bank: Tensor, which: Tensor, top: Tensor, left: Tensor, size: int) -> Tensor:
    """``bank[which[n], :, top[n]:top[n]+size, left[n]:left[n]+size]`` for every n, in one gather.

    ``unfold`` views every window without copying, so only the chosen ones are read.
    """
    return bank.unfold(2, size, 1).unfold(3, size, 1)[which, :, top, left]


def _random_flip(images: Tensor, generator: torch.Generator) -> Tensor:
    flip = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def _random_crop(images: Tensor, generator: torch.Generator, pad_value: float) -> Tensor:
    """CIFAR's crop on a batch: pad 4 with ``pad_value`` (synthetic: 0, its mean, as images are
    normalised; digits: the normalised blank paper), random crop back to size."""
    n, size = len(images), images.shape[-1]
    padded = F.pad(images, (CIFAR_PAD,) * 4, value=pad_value)
    top, left = torch.randint(0, 2 * CIFAR_PAD + 1, (2, n), generator=generator)
    return _crop(padded, torch.arange(n), top, left, size)


def _digits(config: DataConfig) -> tuple[_TensorSplit, _TensorSplit, int, tuple[int, int, int]]:
    """The shipped handwritten digits (``compressor.data.digits``), normalised with the training
    split's mean and std; augmented by CIFAR's random crop only."""
    train_images, train_labels, val_images, val_labels = digits.load()
    for images in (train_images, val_images):
        images.sub_(digits.MEAN).div_(digits.STD)
    blank = (0.0 - digits.MEAN) / digits.STD
    train = _TensorSplit(train_images, train_labels, config.augment, flip=False, pad_value=blank)
    val = _TensorSplit(val_images, val_labels, augment=False)
    return train, val, len(digits.CLASSES), (3, digits.SIZE, digits.SIZE)


def _synthetic(config: DataConfig) -> tuple[_TensorSplit, _TensorSplit, int, tuple[int, int, int]]:
    """A 10-class 32x32 RGB set whose classes are smooth random colour templates.

    Each image is its class template seen through a random translation, overlaid
    with another class's template at a random weight and with smooth random
    clutter in the same frequency band, then contrast/brightness jittered,
    randomly flipped and sprinkled with pixel noise: a small CNN learns it in a
    few epochs but cannot read the label off a colour or a single pixel. Train
    and val share the templates but draw their images from different streams.
    """
    generator = torch.Generator().manual_seed(_derive_seed(_SYNTHETIC_STREAM, config.seed, _TEMPLATES))
    templates = _smooth_fields(SYNTH_CLASSES, CIFAR_SIZE + SYNTH_SHIFT, generator)  # room to translate in
    templates /= templates.std(dim=(1, 2, 3), keepdim=True)  # every class equally loud
    train_images, train_labels = _render(templates, config.synthetic_train, config.seed, _TRAIN)
    val_images, val_labels = _render(templates, config.synthetic_val, config.seed, _VAL)
    mean = train_images.mean(dim=(0, 2, 3), keepdim=True)
    std = train_images.std(dim=(0, 2, 3), keepdim=True)
    train = _TensorSplit(train_images.sub_(mean).div_(std), train_labels, config.augment)
    val = _TensorSplit(val_images.sub_(mean).div_(std), val_labels, augment=False)
    return train, val, SYNTH_CLASSES, (3, CIFAR_SIZE, CIFAR_SIZE)


def _smooth_fields(count: int, size: int, generator: torch.Generator) -> Tensor:
    """``count`` smooth 3-channel random fields of unit mean variance: coarse noise, bicubically upsampled.

    Bicubic upsampling is separable, so it runs as two small matmuls with the
    1-D interpolation matrix, ten times faster than ``F.interpolate`` here.
    """
    eye = torch.eye(SYNTH_GRID).view(SYNTH_GRID, 1, SYNTH_GRID, 1)
    basis = F.interpolate(eye, size=(size, 1), mode="bicubic", align_corners=False).view(SYNTH_GRID, size)
    basis /= basis.pow(2).sum(dim=0).mean().sqrt()
    coarse = torch.randn(count, 3, SYNTH_GRID, SYNTH_GRID, generator=generator)
    return basis.T @ coarse @ basis


def _render(templates: Tensor, count: int, seed: int, split: int) -> tuple[Tensor, Tensor]:
    """``count`` images and balanced labels from one seeded stream (in-place ops: these tensors are large)."""
    generator = torch.Generator().manual_seed(_derive_seed(_SYNTHETIC_STREAM, seed, split))
    labels = (torch.arange(count) % SYNTH_CLASSES)[torch.randperm(count, generator=generator)]
    distractors = (labels + torch.randint(1, SYNTH_CLASSES, (count,), generator=generator)) % SYNTH_CLASSES
    offsets = torch.randint(0, SYNTH_SHIFT + 1, (4, count), generator=generator)
    weight = SYNTH_DISTRACTOR * torch.rand(count, 1, 1, 1, generator=generator)
    images = _crop(templates, labels, offsets[0], offsets[1], CIFAR_SIZE)
    images += _crop(templates, distractors, offsets[2], offsets[3], CIFAR_SIZE).mul_(weight)
    images += _smooth_fields(count, CIFAR_SIZE, generator).mul_(SYNTH_CLUTTER)
    images = _random_flip(images, generator)
    images *= 1 + SYNTH_GAIN * (2 * torch.rand(count, 3, 1, 1, generator=generator) - 1)
    images += SYNTH_BRIGHTNESS * torch.randn(count, 1, 1, 1, generator=generator)
    images += torch.randn(images.shape, generator=generator).mul_(SYNTH_NOISE)
    return images, labels


# --- torchvision datasets (cifar*, imagefolder) --------------------------------------------------


class _SeededSamples(Dataset):
    """Runs each sample's transform under its own seed from the schedule.

    torchvision's random transforms draw from torch's global CPU generator; seeding
    it per sample (and restoring it afterwards, so the training process's own
    random stream is untouched) makes augmentation independent of which worker,
    or which resumed run, loads the sample.
    """

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item: tuple[int, int | None]) -> Any:
        index, seed = item
        if seed is None:
            return self._load(index)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self._load(index)

    def _load(self, index: int) -> Any:
        try:
            return self.base[index]
        # PIL: truncated or not an image at all; DecompressionBombError: a small file that declares
        # hundreds of megapixels (not an OSError, so it escaped as a traceback)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            samples = getattr(self.base, "samples", None)
            name = samples[index][0] if samples else f"sample {index}"
            raise UnreadableImage(f"cannot read image {name}: {one_line(str(error), 120)}; remove or replace the file") from error


class UnreadableImage(CompressorError):
    """A dataset file that is not a readable image (raised in a loader worker too)."""


@dataclass(frozen=True)
class _LoaderSplit:
    """A torchvision dataset read through a DataLoader that follows the given index batches."""

    dataset: Dataset
    workers: int
    pin_memory: bool = False

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, index_batches: list[Tensor], seeds: list[int] | None) -> Iterator[tuple[Tensor, Tensor]]:
        sampler = [_seeded_items(index, None if seeds is None else seeds[b]) for b, index in enumerate(index_batches)]
        # A private generator: the loader's base-seed draw must not advance the global RNG.
        loader = DataLoader(
            _SeededSamples(self.dataset), batch_sampler=sampler, num_workers=self.workers, pin_memory=self.pin_memory,
            generator=torch.Generator().manual_seed(0),
        )
        try:
            yield from loader
        except UnreadableImage as error:  # from a worker, the message carries the worker's traceback
            raise UnreadableImage(_last_line(str(error))) from None


def _last_line(message: str) -> str:
    """A worker's re-raised message is "Caught ... Original Traceback ... Module.Class: text"."""
    last = [line for line in message.splitlines() if line.strip()][-1]
    return last.split(f"{UnreadableImage.__name__}: ", 1)[-1]


def _seeded_items(index: Tensor, batch_seed: int | None) -> list[tuple[int, int | None]]:
    if batch_seed is None:
        return [(i, None) for i in index.tolist()]
    sample_seeds = np.random.SeedSequence(batch_seed).generate_state(len(index), np.uint64)
    return [(i, int(s)) for i, s in zip(index.tolist(), sample_seeds)]


def _normalize(stats: tuple[tuple[float, ...], tuple[float, ...]]) -> list[Callable]:
    return [transforms.ToTensor(), transforms.Normalize(*stats)]


def _cifar(config: DataConfig) -> tuple[_LoaderSplit, _LoaderSplit, int, tuple[int, int, int]]:
    root = Path(config.data_dir or "./data")
    if config.data_dir is not None and not config.download:
        _require_dir(root, "pass --download or point --data-dir at an existing folder")
    stats = CIFAR_STATS[config.dataset]
    random_crop = [transforms.RandomCrop(CIFAR_SIZE, padding=CIFAR_PAD), transforms.RandomHorizontalFlip()]
    train_transform = transforms.Compose((random_crop if config.augment else []) + _normalize(stats))
    train = _open_cifar(config, root, True, train_transform)
    val = _open_cifar(config, root, False, transforms.Compose(_normalize(stats)))
    return (*_loader_splits(config, train, val), len(train.classes),
            (3, CIFAR_SIZE, CIFAR_SIZE))


def _open_cifar(config: DataConfig, root: Path, train: bool, transform: Callable) -> Dataset:
    cls = datasets.CIFAR10 if config.dataset == "cifar10" else datasets.CIFAR100
    folder = "cifar-10-batches-py" if config.dataset == "cifar10" else "cifar-100-python"
    try:
        return cls(root=str(root), train=train, download=config.download, transform=transform)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        raise CompressorError(
            f"{config.dataset} not found (or corrupt) under {root.resolve()}; pass --download or point "
            f"--data-dir at the folder that holds {folder}/"
        ) from exc


def _imagefolder(config: DataConfig) -> tuple[_LoaderSplit, _LoaderSplit, int, tuple[int, int, int]]:
    if config.data_dir is None:
        raise CompressorError("imagefolder needs --data-dir pointing at a folder with train/ and val/ inside")
    root = _require_dir(Path(config.data_dir), "point --data-dir at a folder with train/ and val/ inside")
    size = config.image_size or DEFAULT_IMAGE_SIZE
    random_crop = [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()]
    center = [transforms.Resize(int(size * 256 / 224)), transforms.CenterCrop(size)]
    train_transform = transforms.Compose((random_crop if config.augment else center) + _normalize(IMAGENET_STATS))
    train = _open_folder(root / "train", train_transform)
    val = _open_folder(root / "val", transforms.Compose(center + _normalize(IMAGENET_STATS)))
    if len(train.classes) < 2:  # one class: every prediction is right, "100 %" means nothing
        raise CompressorError(f"{root}/train has only one class folder ({train.classes[0]}); a classifier needs "
                              "at least two class subfolders")
    if val.classes != train.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        raise CompressorError(
            f"{root}/train and {root}/val have different classes (only in train: {only_train[:5]}, "
            f"only in val: {only_val[:5]}); give both the same class subfolders"
        )
    return (*_loader_splits(config, train, val), len(train.classes),
            (3, size, size))


def _open_folder(path: Path, transform: Callable) -> datasets.ImageFolder:
    if not path.is_dir():
        raise CompressorError(f"{path} is missing; imagefolder expects train/<class>/* and val/<class>/* images")
    try:
        return datasets.ImageFolder(str(path), transform=transform, is_valid_file=_is_image_file)
    except (FileNotFoundError, RuntimeError) as exc:  # "Found no valid file ..." / "Couldn't find any class folder"
        kinds = ", ".join(datasets.folder.IMG_EXTENSIONS)
        raise CompressorError(f"no images found in {path} ({one_line(str(exc), None)}); put regular image files "
                              f"({kinds}) in {path}/<class>/") from exc


def _is_image_file(path: str) -> bool:
    """An image extension on a regular file: a FIFO or device named ``x.png`` would block the
    first read forever (or stream without end), so it is left out like any non-image."""
    return datasets.folder.has_file_allowed_extension(path, datasets.folder.IMG_EXTENSIONS) and os.path.isfile(path)


def _require_dir(path: Path, hint: str) -> Path:
    if not path.is_dir():
        raise CompressorError(f"data dir {path} does not exist; {hint}")
    return path


_LOADERS: dict[str, Callable[[DataConfig], tuple[_Split, _Split, int, tuple[int, int, int]]]] = {
    "digits": _digits,
    "synthetic": _synthetic,
    "cifar10": _cifar,
    "cifar100": _cifar,
    "imagefolder": _imagefolder,
}
