"""Which handler traces (and later slices) each layer type: the engine's extension point.

A handler says how a layer's parameters follow its input and output channels
(``LayerHandler``: ``types``, ``trace``, ``refresh``).  The engine ships handlers for
torch's convolutions, linears, norms and attention; a model zoo or a user adds one for
a layer of their own with ``register_handler``.

The handler for a module is chosen by its class's method resolution order: the
handler registered for the most specific class wins, so a handler for a ``Conv2d``
subclass is found before the ``Conv2d`` one without any ordering of the list, and a
handler registered later for the very same class replaces the earlier one.
"""
from __future__ import annotations

from torch import nn

from compressor.engine.analysis.attention import MultiheadAttentionHandler, PrunedMultiheadAttentionHandler
from compressor.engine.analysis.layers import (
    OPAQUE_ATTENTION_TYPES,
    BatchNormHandler,
    ChannelNormHandler,
    ConvHandler,
    LayerHandler,
    LinearHandler,
    OpaqueHandler,
)
from compressor.engine.analysis.swin import SwinAttentionHandler
from compressor.engine.analysis.timm_layers import TimmAttentionHandler, TimmStdConvHandler, TimmWindowAttentionHandler
from compressor.errors import CompressorError


class _WindowAttention(OpaqueHandler):
    types = OPAQUE_ATTENTION_TYPES


BUILT_IN: tuple[LayerHandler, ...] = (
    ConvHandler(),
    TimmStdConvHandler(),  # its types are looked up in sys.modules: empty until timm is imported
    LinearHandler(),
    BatchNormHandler(),
    ChannelNormHandler(),
    MultiheadAttentionHandler(),
    PrunedMultiheadAttentionHandler(),
    SwinAttentionHandler(),
    TimmAttentionHandler(),
    TimmWindowAttentionHandler(),
    _WindowAttention("window attention kept whole (head pruning not supported for)"),
)
_registered: list[LayerHandler] = []


def register_handler(handler: LayerHandler) -> LayerHandler:
    """Teach the engine a layer type: ``handler.types`` lists the classes it handles.

    Returns the handler, so it can be used as ``register_handler(MyHandler())`` at import
    time of the module that defines the layer.  See the README ("Your own layer")."""
    if isinstance(handler, type) and issubclass(handler, LayerHandler):
        raise CompressorError(f"register_handler expects a handler instance: {handler.__name__}(), not the class")
    if not isinstance(handler, LayerHandler):
        raise CompressorError(f"register_handler expects a LayerHandler instance, got {type(handler).__name__}")
    types = handler.types
    if not isinstance(types, (tuple, list)) or not types or not all(
        isinstance(t, type) and issubclass(t, nn.Module) for t in types
    ):
        raise CompressorError(f"{type(handler).__name__}.types must be a tuple of nn.Module classes, got {types!r}")
    if handler in _registered:  # registering again moves it last, where it wins
        _registered.remove(handler)
    _registered.append(handler)
    return handler


def unregister_handler(handler: LayerHandler) -> None:
    """Undo ``register_handler`` (tests, or a notebook trying two handlers)."""
    if handler in _registered:
        _registered.remove(handler)


def handler_for(module: nn.Module) -> LayerHandler | None:
    """The handler registered for the most specific class of ``module``, or None."""
    by_type: dict[type, LayerHandler] = {}
    for handler in (*BUILT_IN, *_registered):  # later registrations replace earlier ones
        for cls in handler.types:
            by_type[cls] = handler
    for cls in type(module).__mro__:
        if cls in by_type:
            return by_type[cls]
    return None
