"""The CIFAR ResNets (resnet20/32/56/110): a 3x3 stem, three stages of basic blocks
at 16, 32 and 64 channels, depth 6n+2, with option-B shortcuts.

Option B (1x1 conv + BN projection where the shape changes) is used instead of
the zero-padding shortcut (option A) because a projection is an ordinary
conv/BN pair that structured pruning can shrink together with the block,
whereas option A hard-wires the channel count of the residual path.
"""

from __future__ import annotations

from torch import Tensor, nn

STAGE_WIDTHS = (16, 32, 64)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free 3x3 conv; the following BN makes a bias redundant."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU.

    Each ReLU is its own non-inplace module so that hooks on every layer see
    the tensor that layer actually produced.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.downsample = _projection(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """Option-B shortcut: only where the block changes resolution or width."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class CifarResNet(nn.Module):
    """Stem conv + three stages of `blocks_per_stage` BasicBlocks + linear head."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = conv3x3(3, STAGE_WIDTHS[0])
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        self.relu = nn.ReLU()
        w1, w2, w3 = STAGE_WIDTHS
        self.layer1 = _stage(w1, w1, blocks_per_stage, stride=1)
        self.layer2 = _stage(w1, w2, blocks_per_stage, stride=2)
        self.layer3 = _stage(w2, w3, blocks_per_stage, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(w3, num_classes)
        _kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


def _stage(in_channels: int, width: int, blocks: int, stride: int) -> nn.Sequential:
    """One resolution stage; only its first block may downsample."""
    layers = [BasicBlock(in_channels, width, stride)]
    layers += [BasicBlock(width, width) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _kaiming_init(model: nn.Module) -> None:
    """He-normal (fan-out) convs and BN at weight 1, bias 0: the initialisation these
    networks were introduced with."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def _resnet(depth: int, num_classes: int) -> CifarResNet:
    """Map a depth of 6n+2 (the stem, 3 stages x n blocks x 2 convs, the head) to n blocks per stage."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    return CifarResNet((depth - 2) // 6, num_classes)


def resnet20(num_classes: int = 10) -> CifarResNet:
    return _resnet(20, num_classes)


def resnet32(num_classes: int = 10) -> CifarResNet:
    return _resnet(32, num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    return _resnet(56, num_classes)


def resnet110(num_classes: int = 10) -> CifarResNet:
    return _resnet(110, num_classes)
