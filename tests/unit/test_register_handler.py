"""The engine's extension point: a user's own layer, pruned through once its handler is
registered (and not before), handlers for subclasses winning over the built-in ones, and
bad registrations refused in one line.  The layer and handler are the README's example."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compressor
from compressor import (
    CompressorError,
    CostModel,
    LayerHandler,
    SelectionConfig,
    UnreachableTargetError,
    analyse,
    group_l2,
    register_handler,
    select_plan,
    unregister_handler,
)
from compressor.engine.analysis import registry
from compressor.engine.analysis.layers import ConvHandler
from tests import custom_layer
from tests.custom_layer import ScaledConv2d, ScaledConv2dHandler, make_net
from tests.helpers import assert_invariants, prune_and_check

pytestmark = pytest.mark.usefixtures("one_torch_thread")
README = Path(__file__).resolve().parents[2] / "README.md"
INPUT = (3, 32, 32)


@pytest.fixture(autouse=True)
def _registry_unchanged():
    """Whatever a test registers is gone afterwards, even when it fails half-way."""
    before = list(registry._registered)
    yield
    for handler in list(registry._registered):
        if handler not in before:
            unregister_handler(handler)


@pytest.fixture
def scaled_conv_handler():
    handler = register_handler(ScaledConv2dHandler())
    try:
        yield handler
    finally:
        unregister_handler(handler)


def test_the_extension_point_is_public():
    for name in ("register_handler", "unregister_handler", "LayerHandler", "ChannelMap"):
        assert name in compressor.__all__
    assert compressor.register_handler is registry.register_handler
    assert compressor.LayerHandler.__doc__ and "refresh(module)" in compressor.LayerHandler.__doc__


# -- (a) without a handler: the layer is opaque -----------------------------------------------
def test_without_a_handler_nothing_is_pruned_through_the_layer():
    """ScaledConv2d is no leaf: the tracer follows its forward, and F.conv2d there is an
    op that mixes channels.  Its inputs (the stem's channels) are kept whole, its outputs
    carry no channels for the next layers, so the model has nothing left to prune."""
    model = make_net()
    graph = analyse(model, torch.randn(1, *INPUT))
    assert graph.groups == []
    assert graph.frozen_reasons == {"0": "conv2d in '3' mixes channels", "10": "model output"}
    assert not [s.key for s in graph.slots if s.module in ("3", "5", "6")]  # its params, the BN after it
    with pytest.raises(UnreachableTargetError, match=r"maximum reachable is 0\.0%"):
        select_plan(graph, CostModel(graph, model), group_l2(graph, model), SelectionConfig(0.4))


# -- (b) with the handler: analysed, planned, applied, exact ------------------------------------
def test_with_the_handler_the_layer_is_pruned_exactly(scaled_conv_handler):
    graph = analyse(make_net(), torch.randn(1, *INPUT))
    assert [g.name for g in graph.groups] == ["0", "3", "5"]  # the stem and both ScaledConv2d outputs
    assert set(graph.group("3").members) == {"3.weight[0]", "3.bias[0]", "3.gain[0]", "5.weight[1]"}

    result = prune_and_check(make_net(), INPUT, 0.4)
    # The sliced model equals the masked original (float64), the predicted MACs and parameters
    # are the counted ones, and the reduction is the one asked for (to a step of 8 channels).
    assert_invariants(result, 0.4, tolerance=0.03)
    layers = [result.pruned[3], result.pruned[5]]
    for layer, before in zip(layers, [(64, 32), (64, 64)]):
        assert isinstance(layer, ScaledConv2d) and tuple(layer.weight.shape[:2]) != before  # sliced
        assert layer.weight.shape[0] == layer.bias.shape[0] == layer.gain.shape[0]
        assert (layer.out_channels, layer.in_channels) == tuple(layer.weight.shape[:2])  # refresh ran
    assert min(layer.out_channels for layer in layers) < 64  # some outputs (and their gains) went
    with torch.no_grad():
        assert result.pruned(torch.randn(2, *INPUT)).shape == (2, 10)


# -- (c) the most specific class wins -----------------------------------------------------------
class GainConv2d(nn.Conv2d):
    """A Conv2d subclass with a parameter of its own: the built-in conv handler keeps it whole."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.rand(self.out_channels) + 0.5)

    def forward(self, x):
        return super().forward(x) * self.gain.view(1, -1, 1, 1)


class GainConv2dHandler(ConvHandler):
    types = (GainConv2d,)

    def trace(self, state, name, module, args, kwargs, out):
        super().trace(state, name, module, args, kwargs, out)
        cmap = state.map_of(out)
        if cmap is not None:
            state.slot(name, "gain", 0, cmap.atoms)


def gain_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
        GainConv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )


def test_a_handler_for_a_subclass_wins_over_the_built_in_and_unregistering_restores_it():
    conv, gain_conv = nn.Conv2d(3, 8, 3), GainConv2d(3, 8, 3)
    built_in = registry.handler_for(gain_conv)
    assert type(built_in) is ConvHandler and registry.handler_for(conv) is built_in
    kept_whole = analyse(gain_net(), torch.randn(1, *INPUT)).frozen_reasons["0"]
    assert kept_whole == "'2' (GainConv2d) has parameters of its own (gain), kept whole"

    handler = register_handler(GainConv2dHandler())
    try:
        assert registry.handler_for(gain_conv) is handler  # found first in GainConv2d's MRO
        assert registry.handler_for(conv) is built_in  # plain convs keep theirs
        graph = analyse(gain_net(), torch.randn(1, *INPUT))
        assert "2.gain[0]" in graph.group("2").members and "0" not in graph.frozen_reasons
        result = prune_and_check(gain_net(), INPUT, 0.4)
        assert_invariants(result, 0.4, tolerance=0.05)
        assert result.pruned[2].gain.shape[0] == result.pruned[2].out_channels < 64
    finally:
        unregister_handler(handler)

    assert registry.handler_for(gain_conv) is built_in
    assert analyse(gain_net(), torch.randn(1, *INPUT)).frozen_reasons["0"] == kept_whole


def test_registering_again_for_the_same_class_replaces_and_unregistering_is_idempotent():
    first, second = ScaledConv2dHandler(), ScaledConv2dHandler()
    layer = ScaledConv2d(3, 8)
    assert registry.handler_for(layer) is None
    register_handler(first)
    register_handler(second)
    assert registry.handler_for(layer) is second
    register_handler(first)  # again: moved last, so it wins, and is listed once
    assert registry.handler_for(layer) is first and registry._registered.count(first) == 1
    unregister_handler(first)
    assert registry.handler_for(layer) is second
    unregister_handler(second)
    unregister_handler(second)  # a no-op
    assert registry.handler_for(layer) is None


# -- (d) bad registrations ----------------------------------------------------------------------
def _handler_with(types) -> LayerHandler:
    handler = ScaledConv2dHandler()
    handler.types = types
    return handler


@pytest.mark.parametrize(
    "bad, message",
    [
        (ScaledConv2dHandler, r"expects a handler instance: ScaledConv2dHandler\(\), not the class"),
        (object(), "expects a LayerHandler instance, got object"),
        (F.conv2d, "expects a LayerHandler instance, got builtin_function_or_method"),
        (_handler_with(()), r"types must be a tuple of nn.Module classes, got \(\)"),
        (_handler_with(ScaledConv2d), "types must be a tuple of nn.Module classes, got <class"),
        (_handler_with(("ScaledConv2d",)), "types must be a tuple of nn.Module classes"),
        (_handler_with((int,)), "types must be a tuple of nn.Module classes"),
        (_handler_with((ScaledConv2d(3, 8),)), "types must be a tuple of nn.Module classes"),
    ],
    ids=["class", "object", "function", "empty", "bare class", "name", "not a module", "an instance"],
)
def test_bad_registrations_are_refused_in_one_line(bad, message):
    before = list(registry._registered)
    with pytest.raises(CompressorError, match=message) as error:
        register_handler(bad)
    assert "\n" not in str(error.value)
    assert registry._registered == before
    assert registry.handler_for(ScaledConv2d(3, 8)) is None


# -- the README shows this very code, and it runs ------------------------------------------------
def _readme_example() -> str:
    section = README.read_text().split("## Your own layer", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_shows_the_tested_layer_and_handler():
    code = _readme_example()
    for obj in (ScaledConv2d, ScaledConv2dHandler, make_net):
        assert inspect.getsource(obj) in code, f"README's {obj.__name__} differs from tests/custom_layer.py"
    assert "from compressor import ChannelMap, LayerHandler" in inspect.getsource(custom_layer)


def test_the_readme_example_runs():
    namespace: dict = {"__name__": "readme_example"}
    try:
        exec(compile(_readme_example(), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    finally:
        for handler in list(registry._registered):
            if isinstance(handler, namespace.get("ScaledConv2dHandler", ())):
                unregister_handler(handler)
    model, graph = namespace["model"], namespace["graph"]
    assert namespace["macs"] < graph.dense_macs and model[3].weight.shape[0] < 64
