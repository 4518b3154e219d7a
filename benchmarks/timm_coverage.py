"""Coverage of the analyse -> plan -> apply engine over timm models from many families.

The same checks as the torchvision table (``benchmarks/coverage.py``): analyse, plan a
MACs reduction with the default selection, apply, then the invariant (sliced == masked
original), counted MACs == predicted, reduction within 1 pp, and a forward pass of the
pruned model.  Random init (``pretrained=False``), no downloads.  Models run at their
native input size unless listed with a smaller one (to keep the sweep affordable on a
shared 2-core CPU; ViT/Swin-style models are rebuilt for that size with ``img_size``).
Deep nets at random init can reach activations of 1e6 and more, where float32 rounding alone
breaks the tolerance; such a model is checked again in float64 (said in its note).
The table and JSON are rewritten after every model, so a stopped sweep keeps its rows.

    python -m benchmarks.timm_coverage --out benchmarks/results/coverage_timm
"""
from __future__ import annotations

import argparse
import time

import torch

from benchmarks import coverage_table
from benchmarks.coverage import RECORD_COLUMNS, CoverageRecord, check_model, record_cells, record_json

# (family, timm name, input size or None for native)
MODELS: list[tuple[str, str, tuple[int, int, int] | None]] = [
    ("resnet", "resnet18", None),
    ("resnet", "resnet18d", None),
    ("resnet", "resnet50d", (3, 160, 160)),
    ("resnet", "seresnext26d_32x4d", (3, 160, 160)),
    ("resnet", "resnest14d", (3, 160, 160)),
    ("resnet", "skresnet18", (3, 160, 160)),
    ("resnet", "res2net50_14w_8s", (3, 160, 160)),
    ("efficientnet", "efficientnet_b0", None),
    ("efficientnet", "tf_efficientnet_b0", None),
    ("efficientnet", "efficientnetv2_rw_t", (3, 160, 160)),
    ("efficientnet", "mixnet_s", None),
    ("mobilenet", "mobilenetv2_100", None),
    ("mobilenet", "mobilenetv3_large_100", None),
    ("mobilenet", "mobilenetv4_conv_small", None),
    ("mobilenet", "lcnet_050", None),
    ("mobilenet", "ghostnet_100", None),
    ("mobilenet", "rexnet_100", None),
    ("regnet", "regnetx_002", None),
    ("regnet", "regnety_004", None),
    ("regnet", "regnetz_b16", (3, 160, 160)),
    ("convnext", "convnext_atto", None),
    ("convnext", "convnextv2_atto", None),
    ("vit", "vit_tiny_patch16_224", None),
    ("vit", "vit_small_patch16_224", (3, 128, 128)),
    ("vit", "deit_tiny_patch16_224", None),
    ("vit", "deit_tiny_distilled_patch16_224", None),
    ("vit", "eva02_tiny_patch14_224", None),
    ("vit", "flexivit_small", (3, 128, 128)),
    ("swin", "swin_tiny_patch4_window7_224", None),
    ("swin", "swinv2_cr_tiny_ns_224", None),
    ("hybrid", "mobilevit_xxs", None),
    ("hybrid", "levit_128s", None),
    ("hybrid", "efficientformer_l1", None),
    ("hybrid", "fastvit_t8", None),
    ("hybrid", "edgenext_xx_small", None),
    ("hybrid", "coat_lite_tiny", None),
    ("metaformer", "poolformer_s12", None),
    ("densenet", "densenet121", (3, 160, 160)),
    ("dla", "dla34", None),
    ("dpn", "dpn68", None),
    ("csp", "cspresnet50", (3, 160, 160)),
    ("vovnet", "ese_vovnet19b_dw", None),
    ("repvgg", "repvgg_a0", None),
    ("hrnet", "hrnet_w18_small", None),
    ("inception", "inception_v3", None),
    ("nfnet", "nf_resnet26", (3, 160, 160)),
]


# Why a model cannot reach the target: channels the analysis keeps whole because pruning
# them would change what the kept channels compute (never a wrong slice).
WHY_UNREACHABLE = {
    "skresnet18": "selective-kernel convs split their input by a width stored in the module "
    "(torch.split(x, in_channels // paths)), and the attention's softmax runs over a (paths, channels) grid: kept whole",
    "mixnet_s": "MixedConv2d splits channels into unequal, fixed-size parts (torch.split with sizes): those stay whole",
    "convnextv2_atto": "GRN (global response norm) divides by the mean over channels, and it sits in every block",
    "nf_resnet26": "ScaledStdConv2d standardises each filter over its input channels, so every conv input stays whole",
}


def _markdown(rows: list[tuple[str, CoverageRecord]], reduction: float) -> str:
    import timm

    passed = sum(r.ok for _, r in rows)
    families: dict[str, list[bool]] = {}
    for family, record in rows:
        families.setdefault(family, []).append(record.ok)
    by_family = ", ".join(f"{f} {sum(v)}/{len(v)}" for f, v in families.items())
    return coverage_table.markdown(
        f"Engine coverage: timm models at {reduction:.0%} MACs reduction",
        [
            f"{passed} / {len(rows)} pass ({by_family}). Checks per model: analyse, plan, apply, sliced == masked "
            "original (max abs diff <= 1e-5 + 1e-5 x output scale), MACs predicted == counted, reduction within "
            "1 pp, forward of the pruned model.",
            f"torch {torch.__version__}, timm {timm.__version__}, {coverage_table.machine()}. Random init, no "
            "downloads. Wall times were taken on a shared 2-core machine (other jobs running): read them as orders "
            "of magnitude.",
        ],
        ["family", "model", "input", *RECORD_COLUMNS],
        [
            [family, r.model.removeprefix("timm:"), "x".join(str(v) for v in r.input_size[1:]), *record_cells(r)]
            for family, r in rows
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", help="timm names (default: the list in this file)")
    parser.add_argument("--reduction", type=float, default=0.3)
    parser.add_argument("--out", default="benchmarks/results/coverage_timm")
    args = parser.parse_args()
    selected = MODELS if not args.models else [m for m in MODELS if m[1] in args.models] or [
        ("other", n, None) for n in args.models
    ]
    rows: list[tuple[str, CoverageRecord]] = []
    for family, name, size in selected:
        started = time.perf_counter()
        record = check_model(f"timm:{name}", args.reduction, input_size=size)
        if record.error.startswith("sliced != masked") and ";" not in record.error:
            record = _recheck_in_float64(name, args.reduction, size, record)
        if not record.ok and name in WHY_UNREACHABLE and record.error.startswith("UnreachableTargetError"):
            record.error += f" -- {WHY_UNREACHABLE[name]}"
        rows.append((family, record))
        status = "ok " if record.ok else "FAIL"
        print(f"{status} {name:<34} engine {record.engine_s:6.2f}s total {time.perf_counter() - started:6.1f}s "
              f"{record.error}", flush=True)
        _write(rows, args)


def _recheck_in_float64(name: str, reduction: float, size, fp32: CoverageRecord) -> CoverageRecord:
    """Deep random-init nets can reach activations of 1e6 and more, where float32 rounding
    alone exceeds the tolerance: the same check in float64 tells rounding from a wrong slice."""
    record = check_model(f"timm:{name}", reduction, input_size=size, dtype=torch.float64)
    if record.ok:
        record.error = (f"float32 diff {fp32.max_abs_diff:.1e} is rounding at random-init activation scale; "
                        f"float64 diff {record.max_abs_diff:.1e}")
    return record


def _write(rows: list[tuple[str, CoverageRecord]], args) -> None:
    records = [{"family": f} | record_json(r) for f, r in rows]
    coverage_table.write(args.out, _markdown(rows, args.reduction), records)


if __name__ == "__main__":
    main()
