"""Data layer: deterministic, resumable, shardable batches; synthetic, CIFAR and image-folder sources; errors."""
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compressor.data import datasets as data
from compressor.data.datasets import DataConfig, load_data
from compressor.errors import CompressorError

SMALL = dict(dataset="synthetic", synthetic_train=200, synthetic_val=100, batch_size=32)


@pytest.fixture(scope="module")
def synthetic():
    return load_data(DataConfig(**SMALL))


@pytest.fixture(scope="module")
def plain():
    """The same set without augmentation, so every image is identifiable."""
    return load_data(DataConfig(**SMALL, augment=False))


def _stack(batches):
    images, labels = zip(*batches)
    return torch.cat(images), torch.cat(labels)


def _shared_rows(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many images of ``a`` also occur, bit for bit, in ``b``."""
    return int((a.flatten(1)[:, None] == b.flatten(1)[None]).all(-1).any(1).sum())


def test_synthetic_shapes_dtypes_labels_and_normalisation(synthetic):
    assert (synthetic.num_classes, synthetic.input_size) == (10, (3, 32, 32))
    assert (synthetic.train_size, synthetic.val_size, synthetic.batches_per_epoch()) == (200, 100, 6)
    images, labels = next(synthetic.train_batches(0))
    assert images.shape == (32, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (32,) and labels.dtype == torch.int64
    val_images, val_labels = _stack(synthetic.val_batches())
    assert set(val_labels.tolist()) == set(range(10))
    assert val_images.mean(dim=(0, 2, 3)).abs().max() < 0.1
    assert (val_images.std(dim=(0, 2, 3)) - 1).abs().max() < 0.1


def test_synthetic_is_deterministic_per_seed_and_differs_across_seeds(synthetic):
    again = load_data(DataConfig(**SMALL))
    other = load_data(DataConfig(**SMALL, seed=1))
    for a, b in zip(synthetic.train_batches(2), again.train_batches(2)):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(_stack(synthetic.val_batches())[0], _stack(again.val_batches())[0])
    assert not torch.allclose(_stack(synthetic.val_batches())[0], _stack(other.val_batches())[0])


def test_train_and_val_are_different_images(plain):
    train_images, _ = _stack(plain.train_batches(0))
    val_images, _ = _stack(plain.val_batches())
    assert _shared_rows(val_images, train_images) == 0


def test_resume_mid_epoch_yields_the_tail_including_augmentation(synthetic, plain):
    full = list(synthetic.train_batches(3))
    tail = list(synthetic.train_batches(3, start_batch=4))
    assert len(tail) == len(full) - 4
    for (a, y), (b, z) in zip(full[4:], tail):
        assert torch.equal(a, b) and torch.equal(y, z)
    unaugmented, labels = next(plain.train_batches(3))
    assert torch.equal(labels, full[0][1]) and not torch.equal(unaugmented, full[0][0])
    assert list(synthetic.train_batches(3, start_batch=6)) == []


def test_epochs_have_different_orders(plain):
    first, second = _stack(plain.train_batches(0))[1], _stack(plain.train_batches(1))[1]
    assert not torch.equal(first, second)


def test_ddp_shards_are_disjoint_and_equal_length(plain):
    shards = [list(plain.train_batches(5, rank=r, world_size=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == plain.batches_per_epoch(2) == 3
    images = [_stack(shard)[0] for shard in shards]
    assert _shared_rows(images[0], images[1]) == 0


def test_validation_keeps_the_last_partial_batch_and_ddp_covers_it_once(plain):
    sizes = [len(labels) for _, labels in plain.val_batches()]
    assert sizes == [32, 32, 32, 4]
    full = _stack(plain.val_batches())[1]
    parts = torch.cat([_stack(plain.val_batches(rank=r, world_size=3))[1] for r in range(3)])
    assert torch.equal(parts, full)


def test_iterating_leaves_the_global_rng_alone(synthetic):
    state = torch.get_rng_state()
    list(synthetic.train_batches(0))
    assert torch.equal(state, torch.get_rng_state())


def _write_images(folder: Path, counts: dict[str, int], size=(20, 14)) -> None:
    rng = np.random.default_rng(0)
    for name, count in counts.items():
        (folder / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


@pytest.fixture
def image_root(tmp_path):
    _write_images(tmp_path / "train", {"cat": 3, "dog": 3})
    _write_images(tmp_path / "val", {"cat": 2, "dog": 1})
    return tmp_path


def test_imagefolder_loads_classes_and_sizes(image_root):
    bundle = load_data(DataConfig("imagefolder", str(image_root), batch_size=2, image_size=16))
    assert (bundle.num_classes, bundle.input_size, bundle.train_size, bundle.val_size) == (2, (3, 16, 16), 6, 3)
    images, labels = next(bundle.train_batches(0))
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.float32
    val_labels = [labels.tolist() for _, labels in bundle.val_batches()]
    assert val_labels == [[0, 0], [1]]


def test_imagefolder_leaves_out_a_fifo_named_like_an_image(image_root):
    # Reading it would block forever; a symlink to a real image still counts.
    os.mkfifo(image_root / "train" / "cat" / "stuck.png")
    (image_root / "train" / "cat" / "link.png").symlink_to(image_root / "train" / "cat" / "0.png")
    (image_root / "train" / "cat" / "notes.txt").write_text("not an image")
    bundle = load_data(DataConfig("imagefolder", str(image_root), batch_size=7, image_size=16))
    assert bundle.train_size == 7  # the 6 images and the link
    images, _ = next(bundle.train_batches(0))  # reads every sample, the FIFO included if it were listed
    assert images.shape == (7, 3, 16, 16)


def test_imagefolder_augmentation_is_resumable_and_worker_independent(image_root):
    config = DataConfig("imagefolder", str(image_root), batch_size=2, image_size=16)
    bundle = load_data(config)
    full = list(bundle.train_batches(1))
    tail = list(bundle.train_batches(1, start_batch=1))
    with_workers = list(load_data(replace(config, workers=2)).train_batches(1))
    for (a, y), (b, z), (c, w) in zip(full[1:], tail, with_workers[1:]):
        assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(y, z)
    assert not torch.equal(full[0][0], list(bundle.train_batches(2))[0][0])


class _FakeCifar(torch.utils.data.Dataset):
    """Stands in for torchvision's CIFAR10 (no download): PIL images through the given transform."""

    def __init__(self, root, train, download, transform):
        self.classes = [str(i) for i in range(10)]
        rng = np.random.default_rng(int(train))
        self.images = rng.integers(0, 256, (40 if train else 10, 32, 32, 3), dtype=np.uint8)
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.transform(Image.fromarray(self.images[index])), index % 10


def test_cifar_path_batches_and_resumes(monkeypatch, tmp_path):
    monkeypatch.setattr(data.datasets, "CIFAR10", _FakeCifar)
    bundle = load_data(DataConfig("cifar10", str(tmp_path), batch_size=8))
    assert (bundle.num_classes, bundle.input_size, bundle.train_size, bundle.val_size) == (10, (3, 32, 32), 40, 10)
    full = list(bundle.train_batches(0))
    tail = list(bundle.train_batches(0, start_batch=2))
    assert len(full) == 5 and full[0][0].shape == (8, 3, 32, 32)
    for (a, _), (b, _) in zip(full[2:], tail):
        assert torch.equal(a, b)
    assert [len(labels) for _, labels in bundle.val_batches()] == [8, 2]


def _error(config_kwargs: dict) -> str:
    with pytest.raises(CompressorError) as info:
        load_data(DataConfig(**config_kwargs))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_dataset_lists_the_valid_ones():
    message = _error(dict(dataset="mnist"))
    assert "mnist" in message and all(name in message for name in data.DATASETS)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_missing_cifar_says_to_download(tmp_path, dataset):
    assert "--download" in _error(dict(dataset=dataset, data_dir=str(tmp_path)))


@pytest.mark.parametrize("dataset", ["cifar10", "imagefolder"])
def test_data_dir_that_does_not_exist(tmp_path, dataset):
    assert "does not exist" in _error(dict(dataset=dataset, data_dir=str(tmp_path / "nope")))


def test_imagefolder_without_data_dir():
    assert "--data-dir" in _error(dict(dataset="imagefolder"))


@pytest.mark.parametrize("missing", ["train", "val"])
def test_imagefolder_missing_split(tmp_path, missing):
    present = "val" if missing == "train" else "train"
    _write_images(tmp_path / present, {"cat": 2})
    assert f"{missing} is missing" in _error(dict(dataset="imagefolder", data_dir=str(tmp_path), batch_size=1))


def test_imagefolder_without_class_folders(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    assert "no images found" in _error(dict(dataset="imagefolder", data_dir=str(tmp_path)))


def test_imagefolder_class_folder_without_images(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    _write_images(tmp_path / "val", {"cat": 1})
    assert "no images found" in _error(dict(dataset="imagefolder", data_dir=str(tmp_path)))


def test_imagefolder_val_classes_must_match_train(tmp_path):
    _write_images(tmp_path / "train", {"cat": 2, "dog": 2})
    _write_images(tmp_path / "val", {"cat": 1, "emu": 1})
    message = _error(dict(dataset="imagefolder", data_dir=str(tmp_path), batch_size=1))
    assert "dog" in message and "emu" in message


def test_batch_size_larger_than_training_set():
    message = _error(dict(dataset="synthetic", synthetic_train=50, synthetic_val=10, batch_size=64))
    assert "64" in message and "50" in message


def test_ddp_shard_smaller_than_a_batch_and_bad_rank(plain):
    with pytest.raises(CompressorError, match="fewer than --batch-size"):
        plain.batches_per_epoch(world_size=8)
    with pytest.raises(CompressorError, match="rank 2"):
        plain.train_batches(0, rank=2, world_size=2)


def test_loader_workers_and_pinning_follow_the_device():
    """A CPU run keeps loading in the training process (workers would take its cores); a CUDA
    run gets loader processes and page-locked batches; a given --workers always wins."""
    from compressor.data.datasets import DataConfig, for_device, loader_workers

    cpu = for_device(DataConfig(dataset="imagefolder"), torch.device("cpu"))
    assert (cpu.workers, cpu.pin_memory) == (0, False)
    cuda = for_device(DataConfig(dataset="imagefolder"), torch.device("cuda"))
    assert cuda.pin_memory and cuda.workers == loader_workers(torch.device("cuda")) >= 1
    assert 1 <= cuda.workers <= 8 and cuda.workers <= max(1, len(os.sched_getaffinity(0)) - 1)
    assert for_device(DataConfig(dataset="imagefolder", workers=3), torch.device("cpu")).workers == 3
