"""Channel rules for functional ops (everything outside leaf modules).

Each rule receives ``(state, func, args, kwargs, out)``, reads its inputs' channel
maps, records couplings/slots/freezes, and sets the output's map.  The rule table at
the bottom binds every spelling of an op (``torch.add``, ``Tensor.add``,
``Tensor.__add__``, ``Tensor.__iadd__``, ``Tensor.add_`` ...) to one rule.

Rules are conservative: where pruning would change what an op computes on the
kept channels (a slice with constant bounds, a mean over channels, an explicit
split size) the channels involved are frozen instead of guessed.
"""
from __future__ import annotations

import operator
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from compressor.engine.analysis import detection
from compressor.engine.analysis.records import ChannelMap
from compressor.engine.analysis.reshape import permute_map, reshape_map
from compressor.engine.analysis.tracer import TraceState


def _first_tensor(args: Sequence[Any]) -> torch.Tensor:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
    raise TypeError("op without tensor input")


def _arg(args: Sequence[Any], kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    if len(args) > index:
        return args[index]
    return default


def _dims(value: Any, ndim: int) -> list[int] | None:
    """Normalise a ``dim`` argument; None means all dims."""
    if value is None:
        return None
    if isinstance(value, int):
        return [value % ndim]
    return [int(v) % ndim for v in value]


def _freeze_inputs(state: TraceState, values: Iterable[Any], reason: str) -> None:
    for value in values:
        state.freeze_map(state.map_of(value), reason)


def _op_label(state: TraceState, func: Any) -> str:
    name = getattr(func, "__name__", str(func))
    module, _ = state.current_module
    return f"{name} in '{module}'" if module else name


# -- same-shape ops ---------------------------------------------------------------------
def unary(state: TraceState, func, args, kwargs, out) -> None:
    """Pointwise ops and dtype/device moves: output channels are input channels."""
    state.set_map(out, state.map_of(_first_tensor(args)))


def along_dim(state: TraceState, func, args, kwargs, out) -> None:
    """softmax/cumsum-like ops: fine unless they mix along a channel dim."""
    x = _first_tensor(args)
    cmap = state.map_of(x)
    dims = _dims(_arg(args, kwargs, 1, "dim"), x.dim())
    if cmap is not None and (dims is None or set(dims) & set(cmap.dims)):
        state.freeze_map(cmap, f"{_op_label(state, func)} mixes channels")
    state.set_map(out, cmap)


def spatial(state: TraceState, func, args, kwargs, out) -> None:
    """Pooling/interpolation: acts on trailing spatial dims, keeps channel dims."""
    x = _first_tensor(args)
    cmap = state.map_of(x)
    outs = out if isinstance(out, tuple) else (out,)
    keeps = cmap is not None and all(
        outs[0].dim() == x.dim() and outs[0].shape[d] == x.shape[d] for d in cmap.dims
    )
    if not keeps:
        state.freeze_map(cmap, f"{_op_label(state, func)} changes a channel dim")
        return
    for o in outs:
        if o.is_floating_point() or o.shape == outs[0].shape:
            state.set_map(o, cmap)


def pad(state: TraceState, func, args, kwargs, out) -> None:
    x = args[0]
    cmap = state.map_of(x)
    amounts = list(_arg(args, kwargs, 1, "pad"))
    padded = {x.dim() - 1 - i // 2 for i, p in enumerate(amounts) if p != 0}
    if cmap is not None and padded & set(cmap.dims):
        state.freeze_map(cmap, f"{_op_label(state, func)} pads channels")
        return
    state.set_map(out, cmap)


def roll(state: TraceState, func, args, kwargs, out) -> None:
    x = args[0]
    cmap = state.map_of(x)
    dims = _dims(_arg(args, kwargs, 2, "dims"), x.dim())
    if cmap is not None and (dims is None or set(dims) & set(cmap.dims)):
        state.freeze_map(cmap, f"{_op_label(state, func)} rolls channels")
        return
    state.set_map(out, cmap)


# -- broadcasting ---------------------------------------------------------------------------
def broadcast(state: TraceState, func, args, kwargs, out) -> None:
    """Elementwise ops with broadcasting couple channels that meet at one position."""
    tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
    if not isinstance(out, torch.Tensor):
        return
    ndim = out.dim()
    tracked: list[ChannelMap] = []
    untracked: list[torch.Tensor] = []
    for t in tensors:
        cmap = state.map_of(t)
        shift = ndim - t.dim()
        if cmap is None:
            untracked.append(t)
            continue
        if any(t.shape[d] != out.shape[d + shift] for d in cmap.dims):
            # A tracked single position broadcast over many: cannot shrink it.
            state.freeze_map(cmap, f"{_op_label(state, func)} broadcasts channels")
            continue
        tracked.append(ChannelMap(tuple(d + shift for d in cmap.dims), cmap.atoms))
    if not tracked:
        return
    dims_set = {m.dims for m in tracked}
    if len(dims_set) > 1:
        for m in tracked:
            state.freeze_map(m, f"{_op_label(state, func)} combines differently laid out channels")
        return
    result = tracked[0]
    for other in tracked[1:]:
        state.table.union(result.atoms, other.atoms)
    for t in untracked:
        _couple_constant(state, func, t, result, ndim)
    state.set_map(out, result)


def _couple_constant(state: TraceState, func, t: torch.Tensor, cmap: ChannelMap, ndim: int) -> None:
    """An untracked operand that varies along a channel dim must be sliced with it."""
    shift = ndim - t.dim()
    hit = [d for d in cmap.dims if d - shift >= 0 and t.shape[d - shift] > 1]
    if not hit:
        return
    if len(cmap.dims) == 1 and state.tensor_slot(t, hit[0] - shift, cmap.atoms):
        return
    state.freeze_map(cmap, f"{_op_label(state, func)} mixes channels with a constant tensor")


# -- concatenation and splitting --------------------------------------------------------
def cat(state: TraceState, func, args, kwargs, out) -> None:
    tensors = list(_arg(args, kwargs, 0, "tensors"))
    ndim = out.dim()
    dim = _arg(args, kwargs, 1, "dim", 0) % ndim
    maps = [state.map_of(t) for t in tensors]
    if any(m is not None and m.dims != (dim,) and dim in m.dims for m in maps):
        for m in maps:
            state.freeze_map(m, f"{_op_label(state, func)} concatenates a channel grid")
        return
    if any(m is not None and dim in m.dims for m in maps):
        pieces = []
        for t, m in zip(tensors, maps):
            if m is None:
                constant = state.new_space(f"constant channels of {_op_label(state, func)}", t.shape[dim])
                state.table.freeze(constant, f"{_op_label(state, func)} concatenates constant channels")
                pieces.append(constant)
            else:
                pieces.append(m.atoms)
        state.set_map(out, ChannelMap((dim,), np.concatenate(pieces)))
        return
    # Concatenation along a non-channel dim: the channel dims are shared.
    broadcast(state, func, tensors, {}, out)


def stack(state: TraceState, func, args, kwargs, out) -> None:
    tensors = list(_arg(args, kwargs, 0, "tensors"))
    dim = _arg(args, kwargs, 1, "dim", 0) % out.dim()
    maps = [state.map_of(t) for t in tensors]
    first = next(m for m in maps if m is not None)
    shifted = ChannelMap(tuple(d + (d >= dim) for d in first.dims), first.atoms)
    for t, m in zip(tensors, maps):
        if m is None or m.dims != first.dims:
            _freeze_inputs(state, tensors, f"{_op_label(state, func)} stacks unlike tensors")
            return
        state.table.union(first.atoms, m.atoms)
    state.set_map(out, shifted)


def split(state: TraceState, func, args, kwargs, out) -> None:
    """split/chunk/tensor_split: equal pieces of a channel dim couple position-wise."""
    x = args[0]
    cmap = state.map_of(x)
    name = getattr(func, "__name__", "")
    dim = _arg(args, kwargs, 2, "dim", 0) % x.dim()
    pieces = list(out)
    if dim not in cmap.dims:
        for piece in pieces:
            state.set_map(piece, cmap)
        return
    equal = len({p.shape[dim] for p in pieces}) == 1
    # chunk(n)/tensor_split(x, n) cut n pieces of whatever width the tensor has; split(x, size)
    # cuts pieces of a width fixed in the code (often a module attribute), which pruning would
    # not update, so only count-based splits can follow a pruned width.
    by_count = name in ("chunk", "tensor_split") and isinstance(_arg(args, kwargs, 1, "chunks"), int)
    if cmap.dims != (dim,) or not (equal and by_count):
        state.freeze_map(cmap, f"{_op_label(state, func)} splits channels at fixed offsets")
    axis = cmap.dims.index(dim)
    offset = 0
    for piece in pieces:
        size = piece.shape[dim]
        atoms = np.take(cmap.atoms, np.arange(offset, offset + size), axis=axis)
        if equal and by_count and offset:
            state.table.union(np.take(cmap.atoms, np.arange(0, size), axis=axis), atoms)
        state.set_map(piece, ChannelMap(cmap.dims, atoms))
        offset += size


def unbind(state: TraceState, func, args, kwargs, out) -> None:
    x = args[0]
    cmap = state.map_of(x)
    dim = _arg(args, kwargs, 1, "dim", 0) % x.dim()
    for index, piece in enumerate(out):
        state.set_map(piece, _select(state, func, cmap, dim, index))


def _select(state: TraceState, func, cmap: ChannelMap, dim: int, index: int) -> ChannelMap | None:
    """Map for ``x.select(dim, index)``: picking one row of a channel grid is fine."""
    shifted = tuple(d - (d > dim) for d in cmap.dims if d != dim)
    if dim not in cmap.dims:
        return ChannelMap(shifted, cmap.atoms)
    axis = cmap.dims.index(dim)
    if len(cmap.dims) > 1 and axis < len(cmap.dims) - 1:
        return ChannelMap(shifted, np.take(cmap.atoms, index, axis=axis))
    state.freeze_map(cmap, f"{_op_label(state, func)} picks single channels")
    return None


def select(state: TraceState, func, args, kwargs, out) -> None:
    x = args[0]
    dim = _arg(args, kwargs, 1, "dim") % x.dim()
    index = _arg(args, kwargs, 2, "index")
    state.set_map(out, _select(state, func, state.map_of(x), dim, int(index) % x.shape[dim]))


def getitem(state: TraceState, func, args, kwargs, out) -> None:
    x, index = args[0], args[1]
    cmap = state.map_of(x)
    if not isinstance(index, tuple):
        index = (index,)
    if any(isinstance(i, (torch.Tensor, list)) or i is True or i is False for i in index):
        state.freeze_map(cmap, f"{_op_label(state, func)} indexes with a tensor")
        return
    if Ellipsis in index:
        at = index.index(Ellipsis)
        used = sum(1 for i in index if i is not None and i is not Ellipsis)
        index = index[:at] + (slice(None),) * (x.dim() - used) + index[at + 1 :]
    in_dim, out_dim = 0, 0
    dims, atoms = [], cmap.atoms
    removed_axes = 0
    for item in index:
        if item is None:
            out_dim += 1
            continue
        if in_dim in cmap.dims:
            axis = cmap.dims.index(in_dim) - removed_axes
            if isinstance(item, int):
                picked = _select(state, func, ChannelMap(tuple(range(atoms.ndim)), atoms), axis, item)
                if picked is None:
                    return
                atoms = picked.atoms
                removed_axes += 1
            else:
                full = range(x.shape[in_dim])
                if list(full[item]) != list(full):
                    state.freeze_map(cmap, f"{_op_label(state, func)} slices channels")
                atoms = np.take(atoms, np.arange(x.shape[in_dim])[item], axis=axis)
                dims.append(out_dim)
                out_dim += 1
        elif not isinstance(item, int):
            out_dim += 1
        in_dim += 1
    for d in range(in_dim, x.dim()):
        if d in cmap.dims:
            dims.append(out_dim)
        out_dim += 1
    state.set_map(out, ChannelMap(tuple(dims), atoms) if dims else None)


def narrow(state: TraceState, func, args, kwargs, out) -> None:
    x = args[0]
    dim = _arg(args, kwargs, 1, "dim") % x.dim()
    cmap = state.map_of(x)
    if dim in cmap.dims and out.shape[dim] != x.shape[dim]:
        state.freeze_map(cmap, f"{_op_label(state, func)} slices channels")
        return
    state.set_map(out, cmap)


# -- shape ops ----------------------------------------------------------------------------
def reshape(state: TraceState, func, args, kwargs, out) -> None:
    x = _first_tensor(args)
    cmap = state.map_of(x)
    new, grids = reshape_map(cmap, tuple(x.shape), tuple(out.shape))
    if new is None:
        state.freeze_map(cmap, f"{_op_label(state, func)} reshapes channels")
        return
    for grid in grids:
        state.couple_rows(grid)
    state.set_map(out, new)


def permute(state: TraceState, func, args, kwargs, out) -> None:
    x = args[0]
    cmap = state.map_of(x)
    name = getattr(func, "__name__", "")
    ndim = x.dim()
    if name in ("transpose", "swapaxes", "swapdims", "transpose_"):
        a = _arg(args, kwargs, 1, "dim0") % ndim
        b = _arg(args, kwargs, 2, "dim1") % ndim
        perm = list(range(ndim))
        perm[a], perm[b] = perm[b], perm[a]
    elif name in ("t", "T", "mT", "__get__"):
        perm = list(range(ndim))[::-1] if ndim <= 2 else list(range(ndim - 2)) + [ndim - 1, ndim - 2]
    elif name in ("movedim", "moveaxis"):
        src = _dims(_arg(args, kwargs, 1, "source"), ndim)
        dst = _dims(_arg(args, kwargs, 2, "destination"), ndim)
        perm: list[int | None] = [None] * ndim
        for s, d in zip(src, dst):
            perm[d] = s
        rest = iter(d for d in range(ndim) if d not in src)
        perm = [p if p is not None else next(rest) for p in perm]
    else:
        dims = args[1:] if len(args) > 2 or (len(args) == 2 and isinstance(args[1], int)) else args[1]
        perm = list(_arg(args, kwargs, 1, "dims")) if "dims" in kwargs else list(dims)
    state.set_map(out, permute_map(cmap, perm))


def expand(state: TraceState, func, args, kwargs, out) -> None:
    x = args[0]
    cmap = state.map_of(x)
    if cmap is None:  # x.expand_as(y) where only y carries channels: the result carries none
        return
    shift = out.dim() - x.dim()
    if any(out.shape[d + shift] != x.shape[d] for d in cmap.dims):
        state.freeze_map(cmap, f"{_op_label(state, func)} repeats channels")
        return
    state.set_map(out, ChannelMap(tuple(d + shift for d in cmap.dims), cmap.atoms))


def reduction(state: TraceState, func, args, kwargs, out) -> None:
    x = _first_tensor(args)
    if isinstance(_arg(args, kwargs, 1, "dim"), torch.Tensor):  # torch.max(a, b) is elementwise
        broadcast(state, func, args, kwargs, out)
        return
    cmap = state.map_of(x)
    dims = _dims(_arg(args, kwargs, 1, "dim"), x.dim())
    if dims is None or set(dims) & set(cmap.dims):
        state.freeze_map(cmap, f"{_op_label(state, func)} reduces over channels")
        return
    keepdim = bool(_arg(args, kwargs, 2, "keepdim", False))
    result = out[0] if isinstance(out, tuple) else out
    if keepdim or result.dim() == x.dim():
        new_dims = cmap.dims
    else:
        new_dims = tuple(d - sum(1 for r in dims if r < d) for d in cmap.dims)
    for o in out if isinstance(out, tuple) else (out,):
        state.set_map(o, ChannelMap(new_dims, cmap.atoms))


def channel_norm(state: TraceState, func, args, kwargs, out) -> None:
    """layer_norm/group_norm/normalize over channels: statistics change if pruned."""
    x = _first_tensor(args)
    cmap = state.map_of(x)
    state.freeze_map(cmap, f"{_op_label(state, func)} normalises over channels")
    state.set_map(out, cmap)


def creation(state: TraceState, func, args, kwargs, out) -> None:
    """``x.new_full(shape, v)``, ``torch.zeros_like(x)``: the result holds no values of ``x``."""


def opaque(state: TraceState, func, args, kwargs, out) -> None:
    """Ops that contract or mix channels (matmul, einsum, attention): keep them whole."""
    flat = [a for a in list(args) + list(kwargs.values())]
    for a in flat:
        if isinstance(a, (list, tuple)):
            _freeze_inputs(state, a, f"{_op_label(state, func)} mixes channels")
        else:
            _freeze_inputs(state, [a], f"{_op_label(state, func)} mixes channels")


# -- the table --------------------------------------------------------------------------------
UNARY = """relu relu_ relu6 hardtanh hardtanh_ hardswish hardswish_ hardsigmoid hardsigmoid_ sigmoid sigmoid_
silu silu_ gelu tanh tanh_ elu elu_ selu celu leaky_relu leaky_relu_ mish softplus softsign logsigmoid
neg abs exp log sqrt rsqrt square clamp clamp_ clamp_min clamp_max sign erf reciprocal nan_to_num round floor
ceil dropout dropout_ dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout contiguous clone detach
to float half double bfloat16 type type_as cpu cuda requires_grad_ __neg__ __abs__ __pos__ zero_ fill_ logical_not
isnan isinf isfinite __invert__""".split()
BROADCAST = """add sub mul div true_divide floor_divide remainder maximum minimum pow where rsub addcmul addcdiv
lerp gt lt ge le eq ne greater less greater_equal less_equal logical_and logical_or logical_xor""".split()
ALONG_DIM = "softmax log_softmax cumsum cumprod".split()
# New tensors that take only a shape, dtype or device from their input (anchors, masks): no channels.
CREATION = """new_full new_zeros new_ones new_empty new_tensor zeros_like ones_like full_like empty_like rand_like
randn_like randint_like""".split()
SPATIAL = """adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d
adaptive_max_pool3d avg_pool1d avg_pool2d avg_pool3d max_pool1d max_pool2d max_pool3d max_pool1d_with_indices
max_pool2d_with_indices max_pool3d_with_indices lp_pool1d lp_pool2d interpolate upsample pixel_unshuffle""".split()
REDUCTION = "mean sum amax amin max min std var prod norm logsumexp nansum nanmean".split()
RESHAPE = "view reshape flatten unflatten squeeze unsqueeze view_as reshape_as ravel squeeze_ unsqueeze_".split()
PERMUTE = "permute transpose swapaxes swapdims movedim moveaxis t transpose_".split()
EXPAND = "expand expand_as broadcast_to".split()
CHANNEL_NORM = "layer_norm group_norm normalize instance_norm local_response_norm rms_norm".split()
OPAQUE = """matmul mm bmm einsum baddbmm addmm addbmm scaled_dot_product_attention bilinear linear conv1d conv2d
conv3d conv_transpose1d conv_transpose2d batch_norm embedding multi_head_attention_forward repeat tile
repeat_interleave index_select gather scatter sort topk flip fliplr flipud diff pixel_shuffle channel_shuffle
__matmul__ __rmatmul__""".split()


def _spellings(name: str) -> list[Any]:
    """Every callable that can reach ``__torch_function__`` for op ``name``."""
    found = []
    for namespace in (torch, torch.Tensor, F, torch.nn.functional, torch.special):
        fn = getattr(namespace, name, None)
        if fn is not None:
            found.append(fn)
    for dunder in (f"__{name}__", f"__r{name}__", f"__i{name}__", f"{name}_"):
        fn = getattr(torch.Tensor, dunder, None)
        if fn is not None:
            found.append(fn)
    return found


def build_rules() -> dict[Any, Any]:
    table: dict[Any, Any] = {}

    def bind(names: Iterable[str], rule) -> None:
        for name in names:
            for fn in _spellings(name):
                table.setdefault(fn, rule)

    # Opaque first so e.g. Tensor.matmul is not swallowed by a looser rule.
    bind(OPAQUE, opaque)
    bind(CHANNEL_NORM, channel_norm)
    bind(UNARY, unary)
    bind(BROADCAST, broadcast)
    bind(["truediv", "floordiv", "mod"], broadcast)
    bind(ALONG_DIM, along_dim)
    bind(SPATIAL, spatial)
    bind(REDUCTION, reduction)
    bind(RESHAPE, reshape)
    bind(PERMUTE, permute)
    bind(EXPAND, expand)
    bind(CREATION, creation)
    bind(["cat", "concat", "concatenate"], cat)
    bind(["stack"], stack)
    bind(["split", "chunk", "tensor_split", "split_with_sizes"], split)
    bind(["unbind"], unbind)
    bind(["select"], select)
    bind(["narrow"], narrow)
    bind(["pad"], pad)
    bind(["roll"], roll)
    table[torch.Tensor.__getitem__] = getitem
    table[torch.Tensor.__setitem__] = opaque
    # Property reads reach the mode as the descriptor's bound __get__; the tracer
    # looks those up by the descriptor itself.
    for prop in ("data", "T", "mT"):
        descriptor = getattr(torch.Tensor, prop, None)
        if descriptor is not None:
            table[descriptor] = unary if prop == "data" else permute
    table[torch.Tensor.__iter__] = opaque
    table[operator.getitem] = getitem
    _bind_torchvision(table)
    detection.bind(table, opaque)
    return table


def _bind_torchvision(table: dict[Any, Any]) -> None:
    """torchvision's stochastic depth multiplies by per-sample noise: pointwise."""
    try:
        from torchvision.ops import stochastic_depth
    except ImportError:  # torchvision is optional for user models
        return
    table[stochastic_depth] = unary


RULES = build_rules()
