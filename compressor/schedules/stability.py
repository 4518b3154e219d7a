"""Stability indicators: has the pruning sub-network stopped changing?

* Jaccard (the one-cycle method): for each group, |K_t ∩ K_{t-2}| / |K_t ∪ K_{t-2}|
  of the kept index sets, averaged over groups; 0 until three plans exist.  The
  score that triggers the prune is the mean of the last three values.
* EPI (count-based): 1 - mean_g |n_t - n_{t-j}| / (n_t + n_{t-j}), averaged over the
  previous ``window`` plans; prune once it reaches a threshold while still rising.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from compressor.engine.plan import PruningPlan

LAG = 2
SMOOTHING = 3


def jaccard(now: PruningPlan, before: PruningPlan) -> float:
    """Mean over groups of the Jaccard similarity of the kept index sets."""
    values = []
    for name, group in now.groups.items():
        kept_now, kept_before = set(group.kept), set(before.groups[name].kept)
        union = kept_now | kept_before
        values.append(len(kept_now & kept_before) / len(union) if union else 1.0)
    return sum(values) / len(values) if values else 1.0


def count_similarity(now: PruningPlan, before: PruningPlan) -> float:
    """EPI's structure similarity: compares only how many channels each group keeps."""
    distances = []
    for name, group in now.groups.items():
        a, b = len(group.kept), len(before.groups[name].kept)
        distances.append(abs(a - b) / (a + b) if a + b else 0.0)
    return 1.0 - sum(distances) / len(distances) if distances else 1.0


@dataclass
class JaccardIndicator:
    threshold: float = 0.999
    plans: list[PruningPlan] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)

    def update(self, plan: PruningPlan) -> float:
        self.plans = (self.plans + [plan])[-(LAG + 1) :]
        value = jaccard(self.plans[-1], self.plans[0]) if len(self.plans) > LAG else 0.0
        self.raw.append(value)
        window = self.raw[-SMOOTHING:]
        self.smoothed.append(sum(window) / len(window))
        return self.smoothed[-1]

    def stable(self) -> bool:
        return bool(self.smoothed) and self.smoothed[-1] >= self.threshold

    def plateaued(self, tolerance: float = 1e-4, min_updates: int = 4) -> bool:
        """The curve stopped rising (used to start regularisation automatically)."""
        if len(self.smoothed) < max(min_updates, LAG + 1):
            return False
        return self.smoothed[-1] - self.smoothed[-1 - LAG] <= tolerance

    def state(self) -> dict:
        return {"plans": [p.to_dict() for p in self.plans], "raw": self.raw, "smoothed": self.smoothed}

    def load_state(self, state: dict) -> None:
        self.plans = [PruningPlan.from_dict(p) for p in state["plans"]]
        self.raw, self.smoothed = list(state["raw"]), list(state["smoothed"])


@dataclass
class EpiIndicator:
    threshold: float = 0.983
    window: int = 5
    plans: list[PruningPlan] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)

    def update(self, plan: PruningPlan) -> float:
        previous = self.plans[-self.window :]
        value = sum(count_similarity(plan, p) for p in previous) / len(previous) if previous else 0.0
        self.plans = (self.plans + [plan])[-self.window :]
        self.smoothed.append(value)
        return value

    def stable(self) -> bool:
        """Reached the threshold and higher than each of the last (up to 5) values."""
        if not self.smoothed or self.smoothed[-1] < self.threshold:
            return False
        earlier = self.smoothed[-6:-1]
        return all(self.smoothed[-1] > value for value in earlier)

    def plateaued(self, tolerance: float = 1e-4, min_updates: int = 4) -> bool:
        return False  # EPI does not regularise

    def state(self) -> dict:
        return {"plans": [p.to_dict() for p in self.plans], "smoothed": self.smoothed}

    def load_state(self, state: dict) -> None:
        self.plans = [PruningPlan.from_dict(p) for p in state["plans"]]
        self.smoothed = list(state["smoothed"])
