"""Per-channel importance scores for channel groups.

Scores are indexed by class id (one value per prunable decision) so selection can
rank across groups.  Each criterion is one small function over the graph's slots:

* ``ocs`` (default, the one-cycle method's): per slot, the squared L2 norm of the
  channel's slice divided by the square root of its element count (BN: gamma²),
  averaged over the slots that cover the channel; optionally weighted down for
  groups whose channels cost more MACs (``cost_weighting``).
* ``l2`` / ``l1``: group norms, divided by the group mean so groups compare.
* ``bn-scale``: |gamma| of the BN layers on the channel (network slimming).
* ``taylor``: first-order Taylor, (sum of weight x gradient)² over the group's
  slices; needs gradients on the parameters.
* ``random``: for ablations.

Within one group, LAASP's ``--criteria-pool`` ranks the group's producer filters (a
row per channel) instead: ``l1`` / ``l2`` by the row's norm, ``euclidean`` / ``cosine``
by the distances between rows (FPGM redundancy).  Every criterion, whichever way it
ranks, is one entry of ``CRITERIA``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
import torch
from torch import nn

from compressor.engine.analysis.graph import ChannelGraph, check_graph_and_model
from compressor.engine.analysis.records import Slot
from compressor.choices import CRITERIA as SCORING_NAMES, POOL_CRITERIA as POOL_NAMES, registry
from compressor.engine.cost import CostModel
from compressor.errors import CompressorError

WEIGHT_NAMES = ("weight", "in_proj_weight")


def _parameters(model: nn.Module) -> dict[str, torch.nn.Parameter]:
    return dict(model.named_parameters())


def _per_atom(tensor: torch.Tensor, dim: int, reduce: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    """``reduce`` applied elementwise, summed over every dim but ``dim``."""
    values = reduce(tensor.detach().float())
    other = [d for d in range(values.dim()) if d != dim]
    return (values.sum(dim=other) if other else values).cpu().numpy().astype(np.float64)


def _weight_slots(graph: ChannelGraph, params: dict) -> list[tuple[Slot, torch.nn.Parameter]]:
    """Slots on trainable weights (conv/linear/attention projections and norm scales)."""
    return [(s, params[s.key]) for s in graph.slots if s.key in params and s.tensor in WEIGHT_NAMES]


def _is_scale(param: torch.Tensor) -> bool:
    return param.dim() == 1  # a norm layer's gamma


def ocs_scores(graph: ChannelGraph, model: nn.Module, **_) -> np.ndarray:
    labels = graph.labels
    total = np.zeros(labels.size)
    count = np.zeros(labels.size)
    for slot, param in _weight_slots(graph, _parameters(model)):
        classes = labels[slot.atoms]
        squares = _per_atom(param, slot.dim, torch.square)
        if _is_scale(param):
            per_class = np.bincount(classes, squares, minlength=labels.size)
        else:
            per_atom_numel = param.numel() // param.shape[slot.dim]
            numel = np.bincount(classes, np.full(classes.size, per_atom_numel, float), minlength=labels.size)
            sums = np.bincount(classes, squares, minlength=labels.size)
            per_class = np.divide(sums, np.sqrt(numel), out=np.zeros_like(sums), where=numel > 0)
        present = np.bincount(classes, minlength=labels.size) > 0
        total += per_class
        count += present
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def _group_normalised(graph: ChannelGraph, raw: np.ndarray) -> np.ndarray:
    scores = np.zeros_like(raw)
    for group in graph.groups:
        values = raw[group.classes]
        mean = values.mean()
        scores[group.classes] = values / mean if mean > 0 else 1.0
    return scores


def _norm_scores(graph: ChannelGraph, model: nn.Module, reduce) -> np.ndarray:
    raw = np.zeros(graph.labels.size)
    for slot, param in _weight_slots(graph, _parameters(model)):
        raw += np.bincount(graph.labels[slot.atoms], _per_atom(param, slot.dim, reduce), minlength=raw.size)
    return _group_normalised(graph, raw)


def l2_scores(graph: ChannelGraph, model: nn.Module, **_) -> np.ndarray:
    return _norm_scores(graph, model, torch.square)


def l1_scores(graph: ChannelGraph, model: nn.Module, **_) -> np.ndarray:
    return _norm_scores(graph, model, torch.abs)


def bn_scale_scores(graph: ChannelGraph, model: nn.Module, **_) -> np.ndarray:
    """|gamma| where a BN covers the channel; groups without BN fall back to L1."""
    raw = np.zeros(graph.labels.size)
    covered = np.zeros(graph.labels.size, dtype=bool)
    for slot, param in _weight_slots(graph, _parameters(model)):
        if _is_scale(param):
            classes = graph.labels[slot.atoms]
            raw += np.bincount(classes, _per_atom(param, slot.dim, torch.abs), minlength=raw.size)
            covered[classes] = True
    fallback = l1_scores(graph, model)
    scores = _group_normalised(graph, raw)
    return np.where(covered, scores, fallback)


def taylor_scores(graph: ChannelGraph, model: nn.Module, **_) -> np.ndarray:
    raw = np.zeros(graph.labels.size)
    for slot, param in _weight_slots(graph, _parameters(model)):
        if param.grad is None:
            raise CompressorError("the taylor criterion needs gradients: score after a backward pass")
        product = (param.detach() * param.grad.detach()).float()
        raw += np.bincount(graph.labels[slot.atoms], _per_atom(product, slot.dim, lambda t: t), minlength=raw.size)
    return _group_normalised(graph, np.square(raw))


def random_scores(graph: ChannelGraph, model: nn.Module, seed: int = 0, **_) -> np.ndarray:
    return np.random.default_rng(seed).random(graph.labels.size)


def filter_norms(order: int, filters: torch.Tensor) -> np.ndarray:
    """||F||_1 or ||F||_2 of each row (one row per channel)."""
    return torch.linalg.vector_norm(filters.double(), ord=order, dim=1).numpy()


def euclidean_distances(filters: torch.Tensor) -> np.ndarray:
    """Pairwise Euclidean distance of the rows."""
    rows = filters.double()
    return torch.cdist(rows, rows, compute_mode="donot_use_mm_for_euclid_dist").numpy()


def cosine_distances(filters: torch.Tensor) -> np.ndarray:
    """Pairwise cosine distance (1 - cos) of the rows; a zero filter is at distance 1
    from everything (the LAASP authors set NaN to 1)."""
    rows = filters.double()
    norms = torch.linalg.vector_norm(rows, dim=1)
    unit = rows / norms.clamp_min(torch.finfo(torch.float64).tiny)[:, None]
    distances = (1.0 - unit @ unit.T).clamp_min(0.0)
    zero = norms == 0
    distances[zero, :] = 1.0
    distances[:, zero] = 1.0
    distances.fill_diagonal_(0.0)
    return distances.numpy()


@dataclass(frozen=True)
class Criterion:
    """One pruning criterion and the ways it can rank channels.

    ``scores(graph, model, seed=...)``: every channel class's importance, higher = keep,
    comparable across groups (``--criterion``; ``select_plan`` ranks them globally).
    ``measure(filters)``: on one group's filter matrix, a value per row (lower = more
    removable) or, when ``pairwise``, the distance matrix of the rows (LAASP's
    ``--criteria-pool``)."""

    scores: Callable[..., np.ndarray] | None = None
    measure: Callable[[torch.Tensor], np.ndarray] | None = None
    pairwise: bool = False


# The one table of criteria; the CLI's names (compressor.choices) are checked against it.
CRITERIA: dict[str, Criterion] = {
    "ocs": Criterion(scores=ocs_scores),
    "l2": Criterion(scores=l2_scores, measure=partial(filter_norms, 2)),
    "l1": Criterion(scores=l1_scores, measure=partial(filter_norms, 1)),
    "bn-scale": Criterion(scores=bn_scale_scores),
    "taylor": Criterion(scores=taylor_scores),
    "random": Criterion(scores=random_scores),
    "euclidean": Criterion(measure=euclidean_distances, pairwise=True),
    "cosine": Criterion(measure=cosine_distances, pairwise=True),
}
# Views of it, in the CLI's order; importing refuses a name without an implementation.
SCORING: dict[str, Criterion] = registry(SCORING_NAMES, {n: c for n, c in CRITERIA.items() if c.scores}, "--criterion")
POOL: dict[str, Criterion] = registry(POOL_NAMES, {n: c for n, c in CRITERIA.items() if c.measure}, "--criteria-pool")


def check_criterion(criterion: str) -> None:
    """``criterion`` is one ``score_channels`` (``--criterion``) can rank with."""
    if criterion not in SCORING:
        raise CompressorError(f"unknown criterion '{criterion}'; choose from {', '.join(SCORING)}")


def score_channels(
    criterion: str,
    graph: ChannelGraph,
    model: nn.Module,
    cost: CostModel | None = None,
    cost_weighting: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """Importance per class id under ``criterion``; higher means keep."""
    check_criterion(criterion)
    scores = SCORING[criterion].scores(graph, model, seed=seed)
    if cost_weighting:
        if cost is None:
            raise ValueError("cost weighting needs the cost model")
        scores = scores * (1.0 - _cost_share(graph, cost))
    return scores


def _cost_share(graph: ChannelGraph, cost: CostModel) -> np.ndarray:
    """softmax over groups of the MACs one channel of the group costs (in millions),
    spread onto the group's classes: expensive channels look less important."""
    per_channel = []
    for group in graph.groups:
        kept = np.ones(graph.labels.size, dtype=bool)
        kept[group.classes[1:]] = False
        saved = cost.dense_macs - cost.macs_estimate(kept)
        per_channel.append(saved / max(group.size - 1, 1) / 1e6)
    weights = np.exp(np.array(per_channel) - max(per_channel, default=0.0))
    weights /= weights.sum() if weights.size else 1.0
    share = np.zeros(graph.labels.size)
    for group, weight in zip(graph.groups, weights):
        share[group.classes] = weight
    return share


def group_l2(graph: ChannelGraph, model: nn.Module) -> np.ndarray:
    """The foundation's default: normalised group L2 (kept for the public API)."""
    check_graph_and_model(graph, model, "group_l2")
    return l2_scores(graph, model)
