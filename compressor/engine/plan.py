"""``PruningPlan``: which indices of each channel group are kept.

Plans are small, printable and JSON-serialisable.  Selection only ever produces
plans, the slicer only ever consumes them, and the stability indicator compares
them epoch to epoch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from compressor.engine.analysis.graph import ChannelGraph
from compressor.artifacts import PlanFile
from compressor.errors import CompressorError


@dataclass(frozen=True)
class GroupPlan:
    size: int
    kept: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.kept:
            raise CompressorError("a plan must keep at least one channel per group")
        if min(self.kept) < 0 or max(self.kept) >= self.size or len(set(self.kept)) != len(self.kept):
            raise CompressorError(f"kept indices must be distinct and in [0, {self.size})")


@dataclass(frozen=True)
class PruningPlan:
    groups: Mapping[str, GroupPlan]

    @classmethod
    def dense(cls, graph: ChannelGraph) -> "PruningPlan":
        return cls({g.name: GroupPlan(g.size, tuple(range(g.size))) for g in graph.groups})

    def kept_channels(self) -> int:
        return sum(len(g.kept) for g in self.groups.values())

    def total_channels(self) -> int:
        return sum(g.size for g in self.groups.values())

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> PlanFile:  # one entry of plan.json
        return {"version": 1, "groups": {n: {"size": g.size, "kept": list(g.kept)} for n, g in self.groups.items()}}

    @classmethod
    def from_dict(cls, data: Mapping) -> "PruningPlan":
        try:
            groups = {str(n): _group_from_dict(g) for n, g in data["groups"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CompressorError(f"malformed pruning plan: {type(error).__name__}: {error}") from error
        return cls(groups)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "PruningPlan":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CompressorError(f"malformed pruning plan: not JSON ({error})") from error
        return cls.from_dict(data)

    def __str__(self) -> str:
        width = max((len(n) for n in self.groups), default=5)
        lines = [f"{'group':<{width}}  kept / size"]
        for name, g in self.groups.items():
            lines.append(f"{name:<{width}}  {len(g.kept):>4} / {g.size}")
        lines.append(f"{'total':<{width}}  {self.kept_channels():>4} / {self.total_channels()}")
        return "\n".join(lines)


def _group_from_dict(data: Mapping) -> GroupPlan:
    size, kept = data["size"], data["kept"]
    if not isinstance(size, int) or not isinstance(kept, (list, tuple)) or not all(isinstance(i, int) for i in kept):
        raise TypeError("a group needs an integer 'size' and a list of integer 'kept' indices")
    return GroupPlan(size, tuple(kept))


def kept_class_mask(graph: ChannelGraph, plan: PruningPlan) -> np.ndarray:
    """Boolean per class id: True where the plan keeps the class (frozen ones always)."""
    kept = np.ones(graph.labels.size, dtype=bool)
    known = {g.name: g for g in graph.groups}
    for name, group_plan in plan.groups.items():
        group = known.get(name)
        if group is None:
            raise CompressorError(f"the plan names group '{name}', which this model does not have")
        if group.size != group_plan.size:
            raise CompressorError(
                f"group '{name}' has {group.size} prunable channels, the plan expects {group_plan.size}"
            )
        removed = np.ones(group.size, dtype=bool)
        removed[list(group_plan.kept)] = False
        kept[group.classes[removed]] = False
    return kept
