"""A user's own layer and its handler: the README's "Your own layer" example.

The README shows ``ScaledConv2d``, ``ScaledConv2dHandler`` and ``make_net`` as written
here, and tests/unit/test_register_handler.py checks that it does.  Nothing is
registered on import: the tests register the handler and always unregister it.
"""
import torch
import torch.nn.functional as F
from torch import nn

from compressor import ChannelMap, LayerHandler


class ScaledConv2d(nn.Module):
    """A 3x3 convolution with a learned gain per output channel, written with F.conv2d."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3) / (9 * in_channels) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.gain = nn.Parameter(torch.ones(out_channels))

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, padding=1) * self.gain.view(1, -1, 1, 1)


class ScaledConv2dHandler(LayerHandler):
    types = (ScaledConv2d,)

    def trace(self, state, name, module, args, kwargs, out):
        inputs = state.channel_atoms(args[0], 1, f"'{name}' input channels are not dim 1")  # None: fixed
        outputs = state.new_space(name, module.out_channels)           # one new atom per output channel
        for tensor in ("weight", "bias", "gain"):
            state.slot(name, tensor, 0, outputs)                       # dim 0 follows the outputs
        if inputs is not None:
            state.slot(name, "weight", 1, inputs)                      # dim 1 follows the inputs
        state.set_map(out, ChannelMap((1,), outputs))                  # what the next layers read
        macs = module.weight.numel() * (out.numel() // out.shape[1])   # F.conv2d, as count_macs counts
        state.term(f"{name} conv", macs, outputs, inputs)              # shrinks with outputs x inputs

    def refresh(self, module):
        module.out_channels, module.in_channels = module.weight.shape[:2]
        return None


def make_net(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        ScaledConv2d(32, 64, stride=2), nn.ReLU(),
        ScaledConv2d(64, 64), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes),
    )
