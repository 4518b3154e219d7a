"""VGG-16/19 with batch norm, sized for 32x32 inputs (five pools -> 512x1x1)."""

from __future__ import annotations

from torch import Tensor, nn

POOL = "M"
CONFIGS: dict[str, list[int | str]] = {
    "vgg16": [64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL,
              512, 512, 512, POOL, 512, 512, 512, POOL],
    "vgg19": [64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL,
              512, 512, 512, 512, POOL, 512, 512, 512, 512, POOL],
}


class VGGCifar(nn.Module):
    """Conv feature stack + a small two-layer classifier (no dropout)."""

    def __init__(self, config: list[int | str], num_classes: int = 10) -> None:
        super().__init__()
        self.features = _features(config)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, num_classes),
        )
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.features(x)))


def _features(config: list[int | str]) -> nn.Sequential:
    """conv3x3-BN-ReLU per number, 2x2 max-pool per POOL.

    Convs carry no bias because the BN right after them has its own shift.
    """
    layers: list[nn.Module] = []
    in_channels = 3
    for item in config:
        if item == POOL:
            layers.append(nn.MaxPool2d(2))
            continue
        layers += [
            nn.Conv2d(in_channels, item, 3, padding=1, bias=False),
            nn.BatchNorm2d(item),
            nn.ReLU(),
        ]
        in_channels = item
    return nn.Sequential(*layers)


def _init(model: nn.Module) -> None:
    """He-normal convs and unit BN, matching torchvision's VGG init."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def vgg16_cifar(num_classes: int = 10) -> VGGCifar:
    return VGGCifar(CONFIGS["vgg16"], num_classes)


def vgg19_cifar(num_classes: int = 10) -> VGGCifar:
    return VGGCifar(CONFIGS["vgg19"], num_classes)
