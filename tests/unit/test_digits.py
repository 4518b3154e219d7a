"""The shipped digits: real images, read offline from the package, on a fixed split."""
import shutil
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compressor.data import digits
from compressor.data.datasets import CIFAR_PAD, DataConfig, load_data
from compressor.errors import CompressorError


@pytest.fixture
def no_network(monkeypatch):
    """Any socket the code under test opens fails the test (and is recorded)."""
    opened = []

    def refuse(*args, **kwargs):
        opened.append(args)
        raise AssertionError(f"a socket was opened: {args}")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return opened


@pytest.fixture(scope="module")
def bundle():
    return load_data(DataConfig(dataset="digits", batch_size=64, augment=False))


def _all(batches):
    images, labels = zip(*batches)
    return torch.cat(images), torch.cat(labels)


def test_loads_offline_with_the_promised_shapes_and_labels(no_network):
    loaded = load_data(DataConfig(dataset="digits", batch_size=64))
    assert (loaded.num_classes, loaded.input_size) == (10, (3, 32, 32))
    assert (loaded.train_size, loaded.val_size) == (1500, 297)
    images, labels = next(loaded.train_batches(0))
    assert images.shape == (64, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert not no_network


def test_split_is_stratified_disjoint_and_fixed():
    pixels, labels = digits.read()
    assert pixels.shape == (1797, 64) and pixels.min() == 0 and pixels.max() == digits.MAX_VALUE
    train, val = digits.split(labels)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(labels)
    val_share = np.bincount(labels[val], minlength=10) / np.bincount(labels, minlength=10)
    assert np.all(np.abs(val_share - digits.VAL_IMAGES / len(labels)) < 0.01)  # every digit in proportion
    again_train, again_val = digits.split(labels)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)


def test_the_validation_images_are_the_same_for_every_seed(bundle):
    other = load_data(DataConfig(dataset="digits", batch_size=64, augment=False, seed=7))
    assert torch.equal(_all(bundle.val_batches())[0], _all(other.val_batches())[0])
    assert torch.equal(_all(bundle.val_batches())[1], _all(other.val_batches())[1])


def test_normalisation_constants_are_the_training_splits():
    images = digits.load()[0]
    assert images[:, 0].mean().item() == pytest.approx(digits.MEAN, abs=1e-3)
    assert images[:, 0].std().item() == pytest.approx(digits.STD, abs=1e-3)
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])  # grey as RGB


def test_upsampling_is_bilinear_from_the_8x8_counts():
    pixels, _ = digits.read()
    source = torch.from_numpy(pixels[:3].astype(np.float32) / 16).view(3, 1, 8, 8)
    image = digits.upsample(pixels[:3])
    assert image.shape == (3, 3, 32, 32)
    # Averaging each 4x4 block back down gives the source within the bilinear kernel's blur.
    assert (F.avg_pool2d(image[:, :1], 4) - source).abs().mean() < 0.1


def test_augmentation_is_a_translation_with_blank_paper_and_no_mirror(bundle):
    augmented = load_data(DataConfig(dataset="digits", batch_size=64))
    index = augmented._epoch_shard(0, 0, 1)[:64]
    images = next(augmented.train_batches(0))[0]
    plain = bundle.train_split.images[index]
    blank = (0.0 - digits.MEAN) / digits.STD
    padded = F.pad(plain, (CIFAR_PAD,) * 4, value=blank)
    for shown, source in zip(images, padded):
        shifts = [source[:, top:top + 32, left:left + 32]
                  for top in range(2 * CIFAR_PAD + 1) for left in range(2 * CIFAR_PAD + 1)]
        assert any(torch.equal(shown, shifted) for shifted in shifts)  # a mirrored digit would match none


def test_a_changed_data_file_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "digits.csv.gz"
    shutil.copy(digits.FILE, copy)
    with copy.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02")
    monkeypatch.setattr(digits, "FILE", copy)
    with pytest.raises(CompressorError, match="sha256"):
        digits.read()


def test_a_missing_data_file_says_to_reinstall(tmp_path, monkeypatch):
    monkeypatch.setattr(digits, "FILE", tmp_path / "gone.csv.gz")
    with pytest.raises(CompressorError, match="reinstall"):
        digits.read()


def test_another_image_size_is_refused():
    with pytest.raises(CompressorError, match="32x32"):
        DataConfig(dataset="digits", image_size=64)


def test_the_licence_ships_beside_the_data():
    licence = digits.FILE.with_name("DIGITS_LICENSE.md").read_text()
    assert "CC BY 4.0" in licence and digits.SHA256 in licence
