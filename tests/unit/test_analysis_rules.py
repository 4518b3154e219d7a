"""Channel rules on hand-made modules: each coupling pattern keeps the invariant,
and what cannot be followed is refused with a clear error or kept fixed."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compressor import analyse
from compressor.engine.analysis.errors import UnsupportedOperationError
from compressor.errors import CompressorError
from tests.helpers import assert_invariants, prune_and_check


def conv_bn(cin, cout, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class ChannelShuffleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = conv_bn(3, 32), conv_bn(3, 32)
        self.mix = conv_bn(64, 32)
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], 1)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        left, right = y.chunk(2, dim=1)
        y = self.mix(torch.cat([left, right * 2], 1))
        return self.head(y.mean((2, 3)))


class DenseConcatSE(nn.Module):
    """Concatenation feeding a BN, a squeeze-excitation multiply, flatten -> linear."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 24)
        self.grow = conv_bn(24, 16)
        self.bn = nn.BatchNorm2d(40)
        self.squeeze, self.excite = nn.Conv2d(40, 16, 1), nn.Conv2d(16, 40, 1)
        self.dw = conv_bn(40, 40, groups=40)
        self.fc = nn.Linear(40 * 4 * 4, 5)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(self.bn(torch.cat([x, self.grow(x)], 1)))
        x = x * torch.sigmoid(self.excite(F.relu(self.squeeze(x.mean((2, 3), keepdim=True)))))
        x = F.adaptive_avg_pool2d(self.dw(x), 4)
        return self.fc(torch.flatten(x, 1))


class GroupedResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 32)
        self.grouped = conv_bn(32, 32, groups=4)
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.grouped(x)
        return self.head(x.mean((2, 3)))


class UsesUnknownOp(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.odd = nn.Identity()
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        x = torch.kthvalue(x, 2, dim=3, keepdim=True).values  # no rule for kthvalue
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize("factory", [ChannelShuffleNet, DenseConcatSE, GroupedResidual], ids=lambda f: f.__name__)
def test_coupling_patterns_keep_the_invariant(factory):
    result = prune_and_check(factory(), (3, 16, 16), 0.3, round_to=1)
    assert_invariants(result, 0.3, tolerance=0.1)  # tiny models: coarse steps


def test_channel_shuffle_couples_the_interleaved_branches():
    graph = analyse(ChannelShuffleNet(), torch.randn(1, 3, 16, 16))
    names = {g.name for g in graph.groups}
    assert "a.0" in names and "b.0" not in names  # a and b became one group


def test_grouped_conv_keeps_groups_equal():
    result = prune_and_check(GroupedResidual(), (3, 16, 16), 0.3, round_to=1)
    for name, group_plan in result.plan.groups.items():
        if name in ("stem", "grouped.0"):
            per_group = [sum(1 for k in group_plan.kept if k // 8 == g) for g in range(4)]
            assert len(set(per_group)) == 1, per_group


def test_input_channels_and_outputs_stay_fixed():
    graph = analyse(DenseConcatSE(), torch.randn(1, 3, 16, 16))
    sliced = {(s.key, s.dim) for s in graph.slots}
    assert ("stem.0.weight", 1) not in sliced
    assert all(not g.name.startswith("fc") for g in graph.groups)
    assert graph.frozen_reasons.get("fc") == "model output"


def test_layer_norm_keeps_its_channels_fixed():
    model = nn.Sequential(nn.Linear(8, 32), nn.LayerNorm(32), nn.Linear(32, 16), nn.GELU(), nn.Linear(16, 4))
    graph = analyse(model, torch.randn(1, 8))
    assert [g.name for g in graph.groups] == ["2"]
    assert "LayerNorm" in graph.frozen_reasons["0"]


def test_unknown_op_is_refused_with_module_and_op():
    with pytest.raises(UnsupportedOperationError, match=r"kthvalue.*--ignore"):
        analyse(UsesUnknownOp(), torch.randn(1, 3, 16, 16))


def test_ignore_keeps_a_layer_fixed():
    model = GroupedResidual()
    graph = analyse(model, torch.randn(1, 3, 16, 16), ignore=["grouped.0"])
    assert all("grouped.0.weight" not in m for g in graph.groups for m in g.members)


def test_ignore_of_unknown_module_suggests_names():
    with pytest.raises(CompressorError, match="did you mean: grouped"):
        analyse(GroupedResidual(), torch.randn(1, 3, 16, 16), ignore=["groupd.0"])
