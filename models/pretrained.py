"""Where a model's trained weights come from: a local file, or a name from torchvision or timm.

``weights`` is a file when it names an existing file, holds a folder separator or ends
like a weights file (``.pt``, ``.pth``, ``.safetensors`` ...); otherwise it is a name:

* a torchvision model takes its weights enum's names: ``IMAGENET1K_V1``, ``DEFAULT`` or
  the full ``ResNet18_Weights.IMAGENET1K_V1`` (``torchvision.models.get_model_weights``);
* a ``timm:NAME`` model takes a pretrained tag of timm's (``a1_in1k``) or ``DEFAULT``.

Names are read from the cache those libraries download into, never downloaded here:
torchvision's file is ``torch.hub.get_dir()/checkpoints/<the file name in its URL>``
(``$TORCH_HOME/hub/checkpoints``), timm's is the Hugging Face hub cache
(``$HF_HUB_CACHE``).  A file missing from the cache is one error naming the path where
it should be.  The torchvision file is read here with ``torch.load(weights_only=True)``
(torchvision's own loader unpickles freely); timm's goes through timm's loader, which
reads safetensors or ``weights_only`` pickles and adapts the weights to the model built
here (a ViT's position embedding to another image size), from the local file only.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from torch import Tensor

from compressor.errors import one_line

from .weights import read_weights_file, with_metadata

WEIGHTS_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".tar", ".pkl", ".pth.tar")
DEFAULT = "DEFAULT"
_NAME = re.compile(r"^\w+(\.\w+)?$")
# torchvision's DenseNet files predate its module names ('norm.1' for 'norm1'); torchvision's
# builder renames the keys on load (densenet._load_state_dict), so the same is done here.
_DENSENET_LEGACY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def is_weights_name(weights: str | os.PathLike) -> bool:
    """A name rather than a path (see the module doc); a Path object is always a path."""
    if not isinstance(weights, str):
        return False
    return (_NAME.match(weights) is not None and not Path(weights).exists()
            and not weights.lower().endswith(WEIGHTS_FILE_SUFFIXES))


def read_weights(model: str, family: str, weights: str | os.PathLike, input_size=None) -> tuple[Mapping[str, Tensor], str]:
    """The state_dict ``weights`` stands for, for ``model`` of ``family`` (a registry family), and
    how to name its source in messages."""
    if not is_weights_name(weights):
        return _fix_legacy_keys(model, family, read_weights_file(Path(weights))), str(weights)
    if family == "torchvision":
        return _torchvision_state(model, weights)
    if family == "timm":
        return _timm_state(model, weights, input_size)
    raise FileNotFoundError(f"weights file not found: {weights} (weights by name, e.g. IMAGENET1K_V1, are "
                            "torchvision's and timm's; other models take a file)")


def _fix_legacy_keys(model: str, family: str, state: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    if family != "torchvision" or not model.startswith("densenet"):
        return state
    return with_metadata(state, {_DENSENET_LEGACY.sub(r"\1\2", key): value for key, value in state.items()})


# -- torchvision -----------------------------------------------------------------------------
def _torchvision_state(model: str, name: str) -> tuple[Mapping[str, Tensor], str]:
    import torch
    import torchvision

    member = _torchvision_member(torchvision.models.get_model_weights(model), model, name)
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(member.url).path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights {member!r} of {model} are not in torch's cache: expected {path} (nothing is downloaded "
            f"here; fetch them where there is a network, e.g. torchvision.models.get_model({model!r}, "
            f"weights={str(member)!r}), and copy the file there, or set TORCH_HOME)"
        )
    return _fix_legacy_keys(model, "torchvision", read_weights_file(path)), f"{member!r} ({path})"


def _torchvision_member(enum, model: str, name: str):
    """``IMAGENET1K_V1``, ``DEFAULT`` or ``ResNet18_Weights.IMAGENET1K_V1`` -> the enum member."""
    prefix, _, value = name.rpartition(".")
    member = enum.__members__.get(value) if prefix in ("", enum.__name__) else None
    if member is None:
        names = ", ".join(enum.__members__)
        raise ValueError(f"--weights {name}: no such file, and not a weights name of {model} "
                         f"(its names: {names}, also as {enum.__name__}.NAME)")
    return member


# -- timm ------------------------------------------------------------------------------------
def _timm_state(model: str, name: str, input_size) -> tuple[Mapping[str, Tensor], str]:
    from .timm_models import _timm, architecture, build_timm

    timm = _timm()
    base = architecture(model).split(".")[0]
    tags = [n.partition(".")[2] for n in timm.list_pretrained(base + ".*")]
    if name != DEFAULT and name not in tags or not tags:
        shown = ", ".join(tags[:8]) + (" ..." if len(tags) > 8 else "")
        raise ValueError(f"--weights {name}: no such file, and not a pretrained tag of timm:{base} "
                         f"(its tags: {shown + '; or DEFAULT' if tags else 'none'})")
    cfg = timm.models.get_pretrained_cfg(base if name == DEFAULT else f"{base}.{name}")
    full = f"{base}.{cfg.tag}"
    path = _hf_cached_file(cfg, full)
    try:
        pretrained = build_timm(full, num_classes=cfg.num_classes, input_size=input_size,
                                pretrained=True, pretrained_cfg_overlay={"file": str(path), "source": ""})
    except Exception as error:  # noqa: BLE001 - a damaged or foreign file fails anywhere inside timm's loader
        raise ValueError(f"timm could not load its weights {full} from {path}: {one_line(error, 200)}") from error
    return pretrained.state_dict(), f"timm {full} ({path})"


def _hf_cached_file(cfg, full: str) -> Path:
    """timm's weights file for ``cfg`` in the Hugging Face cache, looked up offline."""
    if not cfg.hf_hub_id:
        raise ValueError(f"timm's weights {full} are not on the Hugging Face hub, so not in its cache; "
                         "pass the weights file with --weights PATH")
    from huggingface_hub import constants, try_to_load_from_cache

    names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    for filename in names:
        found = try_to_load_from_cache(cfg.hf_hub_id, filename)
        if isinstance(found, str):
            return Path(found)
    folder = Path(constants.HF_HUB_CACHE) / f"models--{cfg.hf_hub_id.replace('/', '--')}"
    raise FileNotFoundError(
        f"timm's weights {full} are not in the Hugging Face cache: expected {folder}/snapshots/REVISION/"
        f"{names[0]} (nothing is downloaded here; fetch them where there is a network, e.g. "
        f"timm.create_model({full!r}, pretrained=True), and copy the cache, or set HF_HUB_CACHE)"
    )
