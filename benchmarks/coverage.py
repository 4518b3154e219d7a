"""Coverage of the analyse -> plan -> apply engine over torchvision's classifiers.

For each model: analyse, plan a MACs reduction with the default selection, apply,
then check the invariant (sliced == masked original), that the counted MACs equal
the prediction, and time analyse+plan+apply.  Writes a markdown table and JSON.

    python -m benchmarks.coverage --out benchmarks/results/coverage_torchvision
"""
from __future__ import annotations

import argparse
import time
import traceback
from dataclasses import asdict, dataclass

import torch
import torchvision

from benchmarks import coverage_table
from compressor.engine.analysis.graph import analyse
from compressor.engine.apply import apply_plan
from compressor.engine.cost import CostModel
from compressor.engine.flops import count_macs
from compressor.engine.importance import group_l2
from compressor.engine.masking import masked_copy
from compressor.engine.plan import kept_class_mask
from compressor.engine.selection import SelectionConfig, select_plan
from compressor.engine.verify import compare, make_informative
from compressor.models import build_model, get_entry, list_models


@dataclass
class CoverageRecord:
    model: str
    input_size: tuple[int, int, int]
    ok: bool
    groups: int = 0
    prunable_channels: int = 0
    dense_macs: int = 0
    pruned_macs: int = 0
    predicted_macs: int = 0
    reduction: float = 0.0
    max_abs_diff: float = float("nan")
    analyse_s: float = 0.0
    plan_s: float = 0.0
    apply_s: float = 0.0
    error: str = ""

    @property
    def engine_s(self) -> float:
        return self.analyse_s + self.plan_s + self.apply_s


def check_model(
    name: str, reduction: float, input_size=None, batch: int = 2, seed: int = 0, dtype: torch.dtype = torch.float32
) -> CoverageRecord:
    entry = get_entry(name)
    size = tuple(input_size or entry.input_size)
    record = CoverageRecord(name, size, ok=False)
    try:
        torch.manual_seed(seed)
        model = make_informative(build_model(name, input_size=size).eval()).to(dtype)
        example = torch.randn(1, *size, dtype=dtype)
        start = time.perf_counter()
        graph = analyse(model, example)
        record.analyse_s = time.perf_counter() - start
        start = time.perf_counter()
        cost = CostModel(graph, model)
        plan = select_plan(graph, cost, group_l2(graph, model), SelectionConfig(reduction))
        record.plan_s = time.perf_counter() - start
        masked = masked_copy(model, graph, plan)
        dense = _copy(model)
        start = time.perf_counter()
        pruned = apply_plan(model, graph, plan)
        record.apply_s = time.perf_counter() - start
        record.groups, record.prunable_channels = len(graph.groups), graph.prunable_channels
        record.dense_macs = graph.dense_macs
        record.predicted_macs = cost.macs(kept_class_mask(graph, plan))
        record.pruned_macs = count_macs(pruned, example)
        record.reduction = 1 - record.pruned_macs / record.dense_macs
        inputs = (torch.randn(batch, *size, dtype=dtype),)
        equivalence = compare(dense, masked, pruned, inputs)
        record.max_abs_diff = equivalence.max_abs_diff
        problems = []
        if not equivalence.changed:
            problems.append("the plan did not change the output (vacuous check)")
        if not equivalence.ok():
            problems.append(f"sliced != masked (max abs diff {equivalence.max_abs_diff:.2e})")
        if record.predicted_macs != record.pruned_macs:
            problems.append(f"MACs predicted {record.predicted_macs} != counted {record.pruned_macs}")
        if abs(record.reduction - reduction) > 0.01:
            problems.append(f"reduction {record.reduction:.3f} is not within 1 pp of {reduction}")
        record.error = "; ".join(problems)
        record.ok = not problems
    except Exception as error:  # noqa: BLE001 - the table reports every failure
        record.error = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        traceback.print_exc()
    return record


def _copy(model):
    import copy

    return copy.deepcopy(model)


def torchvision_models() -> list[str]:
    return [n for n in list_models() if get_entry(n).family == "torchvision"]


# The columns every CoverageRecord fills, after those that name the model (shared with timm_coverage).
RECORD_COLUMNS = [
    "ok", "groups", "prunable ch.", "dense GMACs", "pruned GMACs", "reduction", "max abs diff", "analyse s",
    "plan s", "apply s", "note",
]


def record_cells(r: CoverageRecord) -> list[str]:
    """The cells under RECORD_COLUMNS."""
    return [
        "yes" if r.ok else "NO", f"{r.groups}", f"{r.prunable_channels}", f"{r.dense_macs / 1e9:.3f}",
        f"{r.pruned_macs / 1e9:.3f}", f"{r.reduction:.1%}", f"{r.max_abs_diff:.1e}", f"{r.analyse_s:.2f}",
        f"{r.plan_s:.2f}", f"{r.apply_s:.2f}", r.error,
    ]


def record_json(r: CoverageRecord) -> dict:
    return asdict(r) | {"engine_s": r.engine_s}


def _markdown(records: list[CoverageRecord], reduction: float) -> str:
    passed = sum(r.ok for r in records)
    return coverage_table.markdown(
        f"Engine coverage: torchvision classifiers at {reduction:.0%} MACs reduction",
        [f"{passed} / {len(records)} pass. torch {torch.__version__}, torchvision {torchvision.__version__}, "
         f"{coverage_table.machine()}."],
        ["model", *RECORD_COLUMNS],
        [[r.model, *record_cells(r)] for r in records],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", help="default: every torchvision classifier")
    parser.add_argument("--reduction", type=float, default=0.3)
    parser.add_argument("--out", default="benchmarks/results/coverage_torchvision")
    args = parser.parse_args()
    names = args.models or torchvision_models()
    records = []
    for name in names:
        record = check_model(name, args.reduction)
        records.append(record)
        status = "ok " if record.ok else "FAIL"
        print(f"{status} {name:<22} engine {record.engine_s:6.2f}s  {record.error}", flush=True)
        _write(records, args)  # after every model: a long sweep that is stopped keeps its rows


def _write(records: list[CoverageRecord], args) -> None:
    coverage_table.write(args.out, _markdown(records, args.reduction), [record_json(r) for r in records])


if __name__ == "__main__":
    main()
