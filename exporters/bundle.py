"""What a server needs to feed the exported model: the manifest's ``bundle`` section.

The input tensor (name, shape with its symbolic batch, layout, dtype), how an image file
becomes that tensor (resize, centre crop, scale to 0-1, per-channel mean/std, channel
order: exactly the evaluation transform the model was trained and validated with,
``compressor.data.datasets``), the class names where the dataset has them, and what
the output means.  Taken from the run's recorded data settings; a source that records
none (a model name, a bare model file) gets the input description and a reason instead
of a guessed preprocessing.
"""
from __future__ import annotations

from pathlib import Path

# torchvision's CIFAR-10 class order (its batches.meta), so that the names need no dataset on disk.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
OUTPUT_MEANING = "logits: unnormalised class scores, one per class in class_names order (softmax for probabilities)"


def bundle_section(run_dir: Path | None, inputs: list[dict] | None, outputs: list[dict] | None,
                   postprocessing: dict | None = None) -> dict:
    """The manifest's ``bundle``; ``inputs``/``outputs``: the ONNX graph's signature;
    ``postprocessing``: a detector's steps after its exported outputs."""
    section = {
        "input": {**(inputs or [{}])[0], "layout": "NCHW", "dtype": "float32"},
        "output": {"name": (outputs or [{}])[0].get("name"), "meaning": OUTPUT_MEANING},
    }
    if postprocessing is not None:
        section["output"] = {"names": [o.get("name") for o in outputs or []],
                             "meaning": "a detector's raw head outputs, in this order: see postprocessing"}
        section["postprocessing"] = postprocessing
    try:
        config = _run_data(run_dir)
    except Exception as error:  # noqa: BLE001 - a missing preprocessing is reported, never fatal
        return {**section, "preprocessing": None, "class_names": None, "reason": str(error)}
    return {**section, "dataset": config.dataset, "preprocessing": preprocessing(config),
            "class_names": class_names(config)}


def _run_data(run_dir: Path | None):
    from compressor.errors import CompressorError
    from compressor.runfiles.rundir import run_data_config

    if run_dir is None:
        raise CompressorError("the source is not a `compress prune` run directory, so it records no dataset")
    return run_data_config(run_dir)


def preprocessing(config) -> dict:
    """The evaluation transform of ``config``'s dataset, as numbers a server can apply."""
    from compressor.data.datasets import CIFAR_SIZE, CIFAR_STATS, DEFAULT_IMAGE_SIZE, IMAGENET_STATS

    if config.dataset == "digits":
        return _digits_preprocessing()
    if config.dataset == "synthetic":
        return {"image_files": False,
                "note": "the built-in synthetic set is generated already normalised; it has no image files, so "
                        "there is no file-to-tensor preprocessing to ship"}
    if config.dataset in CIFAR_STATS:
        size, resize, (mean, std) = CIFAR_SIZE, CIFAR_SIZE, CIFAR_STATS[config.dataset]
    else:
        size = config.image_size or DEFAULT_IMAGE_SIZE
        resize, (mean, std) = int(size * 256 / 224), IMAGENET_STATS
    return {
        "image_files": True,
        "channel_order": "RGB",
        "resize_shorter_side": resize,  # bilinear, as torchvision's Resize (CIFAR: any image brought to 32)
        "center_crop": [size, size],
        "scale": "divide 8-bit pixel values by 255 (to 0-1)",
        "mean": list(mean),
        "std": list(std),
        "formula": "x = (pixel / 255 - mean[c]) / std[c], then HWC -> CHW and a batch axis",
    }


def _digits_preprocessing() -> dict:
    """``compressor.data.digits.upsample`` and the normalisation, as numbers (the digits are
    8x8 grids of 0-16 counts, not image files)."""
    from compressor.data import digits

    return {
        "image_files": False,
        "source": f"{digits.SOURCE_SIDE}x{digits.SOURCE_SIDE} grey digits, each pixel a count 0-{digits.MAX_VALUE}",
        "channel_order": "RGB (the grey channel repeated three times)",
        "scale": f"divide by {digits.MAX_VALUE} (to 0-1)",
        "resize": [digits.SIZE, digits.SIZE],
        "resize_mode": "bilinear, align_corners=False (torch.nn.functional.interpolate)",
        "mean": [digits.MEAN] * 3,
        "std": [digits.STD] * 3,
        "formula": "x = (count / 16 upsampled to 32x32 - mean[c]) / std[c], grey repeated to 3 channels, "
                   "then a batch axis",
    }


def class_names(config) -> list[str] | None:
    """Names in class-index order where the dataset has them; listing folders only, never decoding images."""
    if config.dataset == "digits":
        from compressor.data import digits

        return list(digits.CLASSES)
    if config.dataset == "cifar10":
        return list(CIFAR10_CLASSES)
    if config.dataset == "imagefolder" and config.data_dir:
        train = Path(config.data_dir) / "train"
        if train.is_dir():  # torchvision's ImageFolder: sorted class sub-folder names are the indices
            return sorted(entry.name for entry in train.iterdir() if entry.is_dir())
    return None  # synthetic: numbered classes; cifar100: the names live in the dataset's meta file
