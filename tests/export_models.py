"""Small models whose behaviour makes an export or bench option's effect visible.

They are ``module.path:factory`` models (``tests.export_models:NAME``), so the CLI can
build them by name, the way a user's own architecture is built.
"""
from __future__ import annotations

import torch
from torch import nn

from compressor.engine.verify import make_informative

INPUT_SIZE = (3, 8, 8)
BIG_BATCH = 4  # DoublesPastFour's output changes above this batch size


class SmallCnn(nn.Module):
    """Conv-BN-ReLU, pooled, one linear layer: both exporters write it exactly."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DoublesPastFour(SmallCnn):
    """Doubles its logits when the batch holds more than four images.

    torch.export refuses the branch on a symbolic batch, so only the TorchScript tracer
    can export it; the trace bakes in the example's branch, so its ONNX file agrees with
    PyTorch exactly up to batch 4 and is off by the factor 2 from batch 5 on: a parity
    gate passes only if it never checks a batch above 4.  The tracer warns about the
    branch, so the export is refused unless the trace is allowed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        if x.shape[0] > BIG_BATCH:
            logits = logits * 2
        return logits


class FlipsOnBrightInputs(SmallCnn):
    """Negates its logits when any input value exceeds 10: a data-dependent branch that
    randn inputs (and normalised images) never take and raw 0-255 pixels always do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        if x.abs().max() > 10:
            logits = -logits
        return logits


class NormalisesRawPixels(SmallCnn):
    """Normalises its input itself when it looks un-normalised (no negative value): a value
    branch that randn (any scale) never takes and every raw image does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x >= 0).all():
            x = (x - 0.5) / 0.25
        return self.net(x)


class ScalesItsInputInPlace(SmallCnn):
    """Writes into its input (``x.mul_``): correct, but a gate that hands the same tensor to
    PyTorch and then to ONNX Runtime would feed the second one doubled inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.mul_(2))


class FailsPastThree(SmallCnn):
    """Raises (a plain ValueError, as user code does) on batches above 3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 3:
            raise ValueError("batches above 3 are not supported")
        return self.net(x)


class PadsOddWidths(SmallCnn):
    """Pads an odd-width image by one column: a branch on the width, which an export fixes,
    so its trace warns yet is the same program for every input the file can get."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 == 1:
            x = torch.nn.functional.pad(x, (0, 1))
        return self.net(x)


class TwoHeads(SmallCnn):
    """Returns a dict of two outputs: logits and the pooled features."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.net[:-1](x)
        return {"logits": self.net[-1](features), "features": features}


def _informative(cls, num_classes: int) -> nn.Module:
    torch.manual_seed(5)
    return make_informative(cls(num_classes).eval())


def small_cnn(num_classes: int = 4) -> nn.Module:
    return _informative(SmallCnn, num_classes)


def doubles_past_four(num_classes: int = 4) -> nn.Module:
    return _informative(DoublesPastFour, num_classes)


def flips_on_bright_inputs(num_classes: int = 4) -> nn.Module:
    return _informative(FlipsOnBrightInputs, num_classes)


def normalises_raw_pixels(num_classes: int = 4) -> nn.Module:
    return _informative(NormalisesRawPixels, num_classes)


def scales_its_input_in_place(num_classes: int = 4) -> nn.Module:
    return _informative(ScalesItsInputInPlace, num_classes)


def fails_past_three(num_classes: int = 4) -> nn.Module:
    torch.manual_seed(5)
    return FailsPastThree(num_classes).eval()


def pads_odd_widths(num_classes: int = 4) -> nn.Module:
    return _informative(PadsOddWidths, num_classes)


def two_heads(num_classes: int = 4) -> nn.Module:
    return _informative(TwoHeads, num_classes)


def tiny_mlp(num_classes: int = 4) -> nn.Module:
    """The cheapest model torch.compile can be asked to compile (two matmuls)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, num_classes)).eval()


tiny_mlp.input_size = (3, 2, 2)


class ChannelMeans(nn.Module):
    """No weights at all: each image's per-channel means, tiled to the class count."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = x.mean(dim=(2, 3))
        return means.repeat(1, self.num_classes)[:, : self.num_classes] * torch.arange(1, self.num_classes + 1)


def weightless(num_classes: int = 4) -> nn.Module:
    """Nothing for INT8 to quantize (no Conv/Gemm/MatMul)."""
    return ChannelMeans(num_classes).eval()
