"""What the device "auto" means, in one place: CUDA when PyTorch sees a GPU, else the CPU.

``compress prune --device``, its ``--deploy-device`` (what ``--round-to auto`` measures for)
and ``compress bench --device`` all take "auto"; each resolves it here, so the three cannot
come to mean different machines.
"""
from __future__ import annotations

AUTO = "auto"


def auto_device(device: str) -> str:
    """``device`` unchanged, or for "auto": "cuda" when PyTorch sees a GPU, else "cpu"."""
    if device != AUTO:
        return device
    import torch  # here, not at the top: the rest of the base floor stays free of torch

    return "cuda" if torch.cuda.is_available() else "cpu"
