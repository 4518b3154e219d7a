"""``compress export``: ONNX (and TensorRT) files that are proven to compute what PyTorch computes.

The heavy imports (onnx, onnxruntime, onnxsim, tensorrt) happen inside the command,
so ``compress --help`` and the other subcommands stay fast.
"""
from __future__ import annotations

from pathlib import Path

import click

from compressor.cli.common import (INPUT_SIZE_FORMS, bounded_int, finite_float, parse_input_size, trust_code_flag,
                                   user_errors)
from compressor.cli.logs import verbosity_options
from compressor.cli.sections import SectionedCommand
from compressor.choices import DATASETS
from compressor.export.config import (
    CALIB_METHODS, DEFAULT_ATOL, INT8_ACTIVATIONS, DEFAULT_CALIB_SAMPLES, DEFAULT_MAX_BATCH, DEFAULT_RTOL, FORMATS, INT8_CHECK_IMAGES,
    INT8_MIN_AGREEMENT, MAX_ATOL, MAX_RTOL, ExportConfig,
)
from compressor.export.opsets import DEFAULT_OPSET, supported_range_text



# Named, not only listed: `compress run` offers these two as they are (one declaration each).
INT8_OPTION = click.option(
    "--int8", is_flag=True,
    help="Also write model_int8.onnx: QDQ INT8 by ONNX Runtime's static quantization (int8 weights, symmetric, "
    "per output channel; calibrated activations, see --int8-activations); with --format tensorrt also "
    "model_int8.plan (TensorRT's explicit quantization). Calibrated on images of the run's "
    "training split (no augmentation, never the validation split) and judged by top-1 agreement with PyTorch "
    f"fp32 on {INT8_CHECK_IMAGES} other images of that split (see --int8-min-agreement).",
)
CALIB_SAMPLES_OPTION = click.option(
    "--calib-samples", type=bounded_int(min=1), default=DEFAULT_CALIB_SAMPLES, show_default=True,
    help="--int8: number of training-split images the activation ranges are calibrated on.",
)

OPTIONS = [
    click.option(
        "--format", "format_", type=click.Choice(FORMATS), default="onnx", show_default=True,
        help="onnx: model.onnx. tensorrt: also model.plan, a TensorRT engine for this machine's GPU "
        "(needs an NVIDIA GPU and `pip install tensorrt`; without them the ONNX is still written, "
        "then the command fails).",
    ),
    click.option(
        "--out", type=click.Path(),
        help="Output directory [default: RUN/export for a run directory, FILE-export next to a model file, "
        "exports/NAME for a model name]. Files of an earlier export there are replaced.",
    ),
    click.option(
        "--input-size", callback=parse_input_size, metavar="C,H,W",
        help=f"Input size for a model-name SOURCE ({INPUT_SIZE_FORMS}) [default: its native size; a user's factory: its input_size "
        "attribute or 3,224,224]. Refused for runs and model files: they are exported at the size they were "
        "pruned at.",
    ),
    click.option(
        "--opset", type=int,
        help=f"ONNX opset [default: {DEFAULT_OPSET}, the dynamo exporter's own]; {supported_range_text()}.",
    ),
    click.option(
        "--max-batch", type=bounded_int(min=1), default=DEFAULT_MAX_BATCH, show_default=True,
        help="Largest batch the parity gate checks (with 1, 2 and 3) and the TensorRT profile's max. "
        "The ONNX batch dimension itself is symbolic (any size).",
    ),
    click.option(
        "--fp16", is_flag=True,
        help="Also write model_fp16.onnx (FP16 weights and math, float32 inputs/outputs; the way to FP16 on "
        "TensorRT 11) and, with --format tensorrt, model_fp16.plan; checked for >= 99% top-1 agreement.",
    ),
    INT8_OPTION,
    click.option(
        "--calib-data", type=click.Choice(DATASETS),
        help="--int8: the dataset to calibrate on [default: the run's own; required for a model file or name].",
    ),
    click.option(
        "--calib-data-dir", type=click.Path(),
        help="--int8: folder of --calib-data (cifar*: the folder holding cifar-10-batches-py/; imagefolder: the "
        "folder with train/ inside). Nothing is downloaded.",
    ),
    CALIB_SAMPLES_OPTION,
    click.option(
        "--calib-method", type=click.Choice(CALIB_METHODS), default="minmax", show_default=True,
        help="--int8: how ONNX Runtime turns the calibration activations into ranges: minmax (the observed range), "
        "entropy (KL-divergence clipping; ONNX Runtime's quantize_static runs it with as many histogram bins as "
        "quantized bins, which leaves no clipping to choose: on onnxruntime 1.31 it wrote the same file as "
        "minmax) or percentile (clip the top 0.001 %).",
    ),
    click.option(
        "--int8-min-agreement", type=finite_float(min=0.5, max=1.0), default=INT8_MIN_AGREEMENT,
        show_default=True,
        help="--int8 gate: the INT8 model must pick PyTorch fp32's class on at least this share of the held-out "
        "images, else the export is refused (files renamed *.failed).",
    ),
    click.option(
        "--int8-exclude", multiple=True, metavar="NODE",
        help="--int8: keep this ONNX node (a Conv/Gemm/MatMul name; a wrong name is refused with the list) in "
        "float. Repeatable.",
    ),
    click.option(
        "--int8-activations", type=click.Choice(INT8_ACTIVATIONS), default="auto", show_default=True,
        help="--int8: the activation form. auto: the one the target runs best, asymmetric for --format onnx, "
        "symmetric for --format tensorrt (the manifest's int8.activations_chosen says which). symmetric (signed "
        "int8, zero point 0) is what TensorRT takes, and ONNX Runtime's CPU provider runs it too, with slower "
        "S8S8 kernels on x86; asymmetric (uint8 with a zero point) runs ONNX Runtime's fast U8S8 CPU kernels "
        "but TensorRT refuses it.",
    ),
    click.option(
        "--int8-fallback/--no-int8-fallback", default=True, show_default=True,
        help="--int8: when the gate fails, keep the layers that hurt agreement most in float, one at a time, "
        "until it passes (at most a quarter of the layers; the manifest lists them).",
    ),
    click.option(
        "--simplify/--no-simplify", default=True, show_default=True,
        help="Simplify the graph with onnxsim; the simplified model must pass the gate too, else the "
        "unsimplified one is kept (the manifest says why).",
    ),
    click.option(
        "--atol", type=finite_float(min=0), default=DEFAULT_ATOL, show_default=True,
        help="Parity gate: absolute tolerance; every element of every output must satisfy |onnx - torch| <= "
        f"atol + rtol * |torch| (atol grows with the input on the scaled inputs). At most {MAX_ATOL:g}.",
    ),
    click.option(
        "--rtol", type=finite_float(min=0), default=DEFAULT_RTOL, show_default=True,
        help=f"Parity gate: relative tolerance (see --atol). At most {MAX_RTOL:g}.",
    ),
    click.option(
        "--allow-trace", is_flag=True,
        help="Keep a TorchScript trace even though the tracer warned of data-dependent Python control flow "
        "(an `if` on a tensor's value or the batch size: the trace keeps one branch). Without it such an "
        "export is refused; with it the manifest records the flag and the tracer's warnings.",
    ),
    click.option(
        "--no-verify", is_flag=True,
        help="Skip the parity gates (PyTorch vs ONNX Runtime / TensorRT); the manifest then says 'unverified'.",
    ),
    click.option(
        "--overwrite", is_flag=True,
        help="Replace model.onnx, manifest.json ... in --out even if no earlier export there wrote them "
        "(without it, files an export's manifest does not vouch for are refused).",
    ),
    trust_code_flag(),
]


def export_options(command):
    for option in reversed(OPTIONS):
        command = option(command)
    return command


@click.command("export", cls=SectionedCommand, context_settings={"max_content_width": 110})
@click.argument("source")
@export_options
@verbosity_options
@user_errors
def export_command(
    source: str, format_: str, out, input_size, opset, max_batch, fp16, int8, calib_data, calib_data_dir,
    calib_samples, calib_method, int8_min_agreement, int8_exclude, int8_activations, int8_fallback, simplify, atol, rtol, allow_trace,
    no_verify, overwrite, trust_code,
) -> None:
    """Export SOURCE to ONNX (and TensorRT) behind a parity gate.

    SOURCE is a `compress prune` run directory (its model.pt), a pruned model file, or a
    model name: zoo/torchvision, timm:NAME or module.path:factory (dense, random init: the
    baseline). The exported model runs in ONNX Runtime next to PyTorch on the same inputs:
    random ones at every batch size from 1 to --max-batch (up to 16, then --max-batch itself), the
    max batch scaled far below and
    far above its range, and, for a run directory, images from the run's validation set.
    Every output is compared; beyond --atol/--rtol the export is refused (exit 1, files
    renamed *.failed).
    Writes model.onnx (symbolic batch dimension) and manifest.json (shapes, MACs, params,
    parity numbers, sha256 of every file, tool versions).

    A single-stage detector (RetinaNet, FCOS, SSD, SSDlite) is exported as its network:
    images in 0-1 at the network's input size to the head's raw per-anchor outputs, every
    one gated; resizing, anchor decoding and NMS stay outside, described with the detector's
    numbers in the manifest's bundle.postprocessing. Two-stage detectors (R-CNN) are refused."""
    from compressor.export.pipeline import ExportStopped, export_source
    from compressor.export.sources import resolve_source

    try:
        config = ExportConfig(  # every option refused before the model is loaded; out None: the source's default
            out=Path(out) if out else None, format=format_, opset=opset, max_batch=max_batch,
            fp16=fp16, simplify=simplify, atol=atol, rtol=rtol, verify=not no_verify, overwrite=overwrite,
            allow_trace=allow_trace, int8=int8, calib_data=calib_data, calib_data_dir=calib_data_dir,
            calib_samples=calib_samples, calib_method=calib_method, int8_min_agreement=int8_min_agreement,
            int8_exclude=tuple(int8_exclude), int8_fallback=int8_fallback, int8_activations=int8_activations,
        )
        result = export_source(resolve_source(source, input_size, trust_code), config)
    except ExportStopped as error:  # what was written, then the one-line reason (user_errors)
        _print_summary(error.result.manifest, error.result.out)
        raise
    _print_summary(result.manifest, result.out)


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _print_summary(manifest: dict, out: Path) -> None:
    source = manifest["source"]
    kind = "pruned" if source["pruned"] else "dense"
    click.echo(
        f"{manifest['model']} ({source['kind']}, {kind}): {manifest['exporter']} exporter, "
        f"opset {manifest['opset']}, "
        f"input {_shape(manifest['inputs'])} -> {_shape(manifest['outputs'])}, "
        f"{manifest['macs'] / 1e6:.1f} M MACs, {manifest['params'] / 1e6:.3f} M params"
    )
    for name, record in manifest["files"].items():
        click.echo(f"  {name:<22} {_size(record['size']):>10}  sha256 {record['sha256'][:12]}")
    _print_checks(manifest)
    click.echo(f"status {manifest['status']}; manifest.json in {out}")


def _shape(values) -> str:
    return ", ".join(f"{v['name']} [{','.join(str(d) for d in v['shape'])}]" for v in values or [])


def _print_checks(manifest: dict) -> None:
    parity = manifest["parity"]
    if parity.get("checked"):
        click.echo(f"  parity {_parity_line(parity)}")
    simplify = manifest.get("simplify") or {}
    if not simplify.get("applied") and simplify.get("reason"):
        click.echo(f"  onnxsim not applied: {simplify['reason']}")
    check = (manifest.get("fp16") or {}).get("check") or {}
    if check.get("checked"):
        click.echo(f"  fp16   {_top1_line(check)}")
    int8 = manifest.get("int8") or {}
    if (int8.get("check") or {}).get("rule"):
        click.echo(f"  int8   {_int8_line(int8)}")
    trt = manifest.get("tensorrt") or {}
    if trt.get("parity"):
        click.echo(f"  tensorrt parity {_parity_line(trt['parity'])}")
    if trt.get("fp16_parity"):
        click.echo(f"  tensorrt fp16   {_top1_line(trt['fp16_parity'])}")
    if trt.get("int8_check"):
        check = trt["int8_check"]
        click.echo(f"  tensorrt int8   top-1 agreement {check['agreement']:.1%} of {check['check_images']} held-out "
                   f"images (needs {check['min_agreement']:.0%}: {'passed' if check['passed'] else 'FAILED'})")


def _int8_line(int8: dict) -> str:
    check, calibration = int8["check"], int8["calibration"]
    verdict = "passed" if check["passed"] else "FAILED"
    floats = f", {len(check['float_layers'])} layer(s) kept in float" if check["float_layers"] else ""
    return (
        f"QDQ calibrated on {calibration['samples']} {calibration['dataset']} train images ({calibration['method']}): "
        f"top-1 agreement {check['agreement']:.1%} of {check['check_images']} held-out images "
        f"(needs {check['min_agreement']:.0%}: {verdict}){floats}"
    )


def _parity_line(parity: dict) -> str:
    verdict = "passed" if parity["passed"] else "FAILED"
    return (
        f"{parity['backend']} {parity['provider']} vs PyTorch fp32 on {_gate_inputs(parity)}: "
        f"max abs err {parity['max_abs_err']:.2e}, max rel err {parity['max_rel_err']:.2e}, "
        f"top-1 {parity['top1_agreement']:.1%} (atol {parity['atol']:g}, rtol {parity['rtol']:g}: {verdict})"
    )


def _gate_inputs(parity: dict) -> str:
    """'randn at every batch 1-8, scaled x0.01/x100, uniform 0-1/0-255, 32 dataset images'"""
    batches = sorted(set(parity["batch_sizes"]) | set(parity.get("batch_sweep") or []))
    every = batches == list(range(1, batches[-1] + 1)) and len(batches) > 3
    parts = [f"randn at every batch 1-{batches[-1]}" if every else "randn batches " + ",".join(map(str, batches))]
    scaled = [label.split()[-1] for label in parity.get("inputs", []) if label.startswith("randn x")]
    if scaled:
        parts.append("scaled " + "/".join(scaled))
    uniform = [label.split()[-1] for label in parity.get("inputs", []) if label.startswith("uniform")]
    if uniform:
        parts.append("uniform " + "/".join(uniform))
    images = (parity.get("dataset_images") or {}).get("used")
    if images:
        parts.append(f"{images} dataset images")
    return ", ".join(parts)


def _top1_line(check: dict) -> str:
    verdict = "passed" if check["passed"] else "FAILED"
    if not check.get("top1_judged", True):  # no class axis: judged by relative error
        return (
            f"{check['backend']} {check['provider']}: max |fp16 - fp32| / max |fp32| {check['max_rel_err']:.2e} on "
            f"{check['batch_size']} inputs (allowed {check['max_rel_bound']:g}: {verdict})"
        )
    return (
        f"{check['backend']} {check['provider']}: top-1 agreement {check['top1_agreement']:.1%} of "
        f"{check['batch_size']} (needs {check['min_top1']:.0%}: {verdict}), max abs err {check['max_abs_err']:.2e}"
    )
