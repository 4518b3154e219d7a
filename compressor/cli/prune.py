"""``compress prune``: one training run that ends with a smaller dense network.

Every option maps onto a field of DataConfig, TrainConfig or PruneConfig.  A
``--config`` file (YAML or TOML, keys spelled like the options) supplies defaults
that command-line flags override.  ``--resume DIR`` continues a run from its last
checkpoint and refuses flags that contradict it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from compressor.choices import (AMP_MODES, BENCH_BACKENDS, BUILT_IN_DATASETS, CRITERIA, DATASETS, DEFAULT_DEPLOY_BACKEND, LR_SCHEDULES, MAX_SEED,
                                OPTIMIZERS, POOL_CRITERIA, REG_SCHEDULES)
from compressor.cli.common import (MAX_COUNT, LiveChoice, RenamedOption, bounded_int, bounded_number, finite_float,
                                   parse_square_input_size, trust_code_flag, user_errors, user_said)
from compressor.cli.logs import verbosity_options
from compressor.cli.sections import SectionedCommand
from compressor.cli.speedup import speedup_options
from compressor.errors import CompressorError
from compressor.schedules.registry import schedule_names  # torch-free: --help lists them

DEFAULT_EPOCHS = 10


def _load_config_file(ctx: click.Context, param, value: str | None):
    """Eager: the file's settings become defaults for every other option."""
    if value is None:
        return None
    path = Path(value)
    try:
        if not path.is_file():
            raise click.BadParameter(f"no such config file: {path}")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise click.BadParameter(f"{path} is not UTF-8 text, so neither YAML nor TOML (byte {error.start}: "
                                 f"{error.object[error.start:error.start + 1]!r})") from None
    except OSError as error:  # a name too long to look up, a folder it cannot enter
        raise click.BadParameter(f"cannot read {path}: {error.strerror or type(error).__name__}") from None
    try:
        if path.suffix in (".toml",):
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as error:  # noqa: BLE001 - any parse error is the file's fault
        raise click.BadParameter(f"{path} is not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {error}")
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} must hold a mapping of option names to values")
    known = {p.name for p in ctx.command.params}
    settings = {str(k).replace("-", "_"): v for k, v in data.items()}
    settings = {("image_size" if k == "input_size" else k): v for k, v in settings.items()}  # --input-size's name
    unknown = sorted(set(settings) - known)
    if unknown:
        raise click.BadParameter(f"{path} sets unknown options: {', '.join(unknown)}")
    if "trust_code" in settings:  # a file must not be able to vouch for the code it names
        raise click.BadParameter(f"{path} sets trust_code; only --trust-code on the command line can")
    _check_file_types(ctx, path, settings)
    ctx.meta["config_file"] = str(path)  # --resume refuses it: the run's own settings win
    ctx.default_map = {**(ctx.default_map or {}), **settings}
    return value


def _check_file_types(ctx: click.Context, path: Path, settings: dict) -> None:
    """A file's value must already have the option's type: click would turn ``epochs: 1.7``
    into 1 and ``epochs: true`` into 1 without a word."""
    for param in ctx.command.params:
        if param.name not in settings or settings[param.name] is None:
            continue
        value, kind = settings[param.name], param.type
        if isinstance(kind, click.types.BoolParamType):
            wanted, ok = "true or false", isinstance(value, bool)
        elif isinstance(kind, click.types.IntParamType):
            wanted, ok = "an integer", isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(kind, click.types.FloatParamType):
            wanted, ok = "a number", isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            continue  # strings, choices and lists: the option's own parsing checks them
        if not ok:
            raise click.BadParameter(f"{path}: {param.name} must be {wanted}, got {value!r}; not converted")


def _reg_start(ctx, param, value):
    if value is None or str(value).lower() == "auto":
        return None
    return bounded_number(value, "an epoch number", 1, MAX_COUNT)


def _fractions(ctx, param, value):
    if isinstance(value, (list, tuple)):
        return tuple(float(v) for v in value)
    try:
        values = tuple(float(v) for v in str(value).split(",") if v.strip())
    except ValueError:
        raise click.BadParameter("expected comma-separated fractions such as 0.3,0.6,0.8,0.9")
    if not all(0 < v < 1 for v in values):  # NaN fails this too
        raise click.BadParameter("each milestone must be a fraction of the run in (0, 1)")
    if any(later <= earlier for earlier, later in zip(values, values[1:])):
        raise click.BadParameter(f"milestones must increase (each a later point of the run), got "
                                 f"{','.join(f'{v:g}' for v in values)}")
    return values


def _names(ctx, param, value):
    """A comma-separated list (or a config file's list); PruneConfig checks the names."""
    if isinstance(value, (list, tuple)):
        return tuple(str(v).strip() for v in value)
    return tuple(v.strip() for v in str(value).split(",") if v.strip())


def _round_to(ctx, param, value):
    if value is None or str(value).lower() == "auto":
        return None if value is None else "auto"
    return bounded_number(value, "a positive integer", 1, MAX_ROUND_TO)


# --round-to at most: a multiple wider than any layer keeps every channel of every group, so
# a larger one would be accepted and silently prune nothing (ResNet-50's widest layer: 2048).
MAX_ROUND_TO = 4096
# --synthetic-train/--synthetic-val at most: the set is rendered in memory, 12 KB an image
# (3x32x32 float32), so a million is 12 GB; the OverflowError of 10**20 came from deep in torch.
MAX_SYNTHETIC_IMAGES = 1_000_000


OPTIONS = [
    click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False, callback=_load_config_file, help="YAML or TOML file of option values (flags override it)."),
    click.option("--model", default="resnet20", show_default=True, help="A zoo or torchvision name (see `compress models`), timm:NAME (the timm extra), or module.path:factory: your function that returns an nn.Module."),
    click.option("--weights", metavar="FILE|NAME", help="Start from trained weights instead of random init: a local file (a state_dict, bare or under 'state_dict'/'model'; .pt/.pth/.bin or .safetensors), or a name: torchvision's for its models (IMAGENET1K_V1, DEFAULT, ResNet18_Weights.IMAGENET1K_V1), a pretrained tag (or DEFAULT) for timm:NAME. A name is read from the library's cache ($TORCH_HOME/hub/checkpoints; timm: the Hugging Face cache), never downloaded: a missing file is an error naming where it should be. A head trained for another class count is re-initialised for the data's (or --num-classes); any other mismatch is refused."),
    click.option("--num-classes", type=bounded_int(min=1), help="The model's outputs [default: the dataset's class count]; at least that many."),
    click.option("--out", type=click.Path(file_okay=False), help="Output directory [default: runs/MODEL-SCHEDULE]."),
    click.option("--resume", type=click.Path(file_okay=False), help="Continue the run in this directory from its last checkpoint."),
    click.option("--overwrite", is_flag=True, help="Allow a fresh run into a non-empty --out that holds no run (its files of the same names are replaced, the rest left alone). A directory holding a run is refused even so: --resume it or choose another --out."),
    trust_code_flag(" Here: the checkpoint --resume continues, and a --model set by a --config file (a file's word too)."),
    # data
    click.option("--dataset", type=click.Choice(DATASETS), default="digits", show_default=True, help="digits: real handwritten digits shipped in the package (1,500 train / 297 val, 8x8 grey upsampled to 32x32 RGB; offline). synthetic: generated 10-class 32x32 images of any size (--synthetic-train/--synthetic-val; for tests, not for accuracy). cifar10/cifar100 via torchvision, or an ImageNet-style folder (imagefolder)."),
    click.option("--data-dir", type=click.Path(), help="Dataset root (cifar*: where it is/goes; imagefolder: holds train/ and val/)."),
    click.option("--download", is_flag=True, help="Allow torchvision to download CIFAR into --data-dir."),
    click.option("--batch-size", type=bounded_int(min=1), default=128, show_default=True, help="Batch size per process."),
    click.option("--workers", type=bounded_int(min=0), default=None, help="Data loader processes for cifar*/imagefolder [default: 0 on a CPU run, where they would take cores from training; on a GPU min(8, cores - 1)]. Batches are pinned in memory when training on CUDA."),
    click.option("--input-size", "image_size", cls=RenamedOption, old="--image-size", callback=parse_square_input_size, metavar="N|3,N,N", help="imagefolder: the square crop the model sees [default: 224]; digits, cifar and synthetic are 32 (their only size). Formerly --image-size, still accepted (deprecated)."),
    click.option("--synthetic-train", type=bounded_int(1, MAX_SYNTHETIC_IMAGES), default=5000, show_default=True, help="synthetic: images in the training set."),
    click.option("--synthetic-val", type=bounded_int(1, MAX_SYNTHETIC_IMAGES), default=1000, show_default=True, help="synthetic: images in the validation set."),
    click.option("--augment/--no-augment", default=True, show_default=True, help="CIFAR-style random crop + flip (digits: the crop only; imagefolder: random resized crop + flip)."),
    # pruning
    click.option("--flops-reduction", type=finite_float(0, 1, min_open=True, max_open=True), default=0.5, show_default=True, help="Fraction of MACs to remove (the default budget; exclusive with --speedup)."),
    click.option("--schedule", type=LiveChoice(schedule_names), default="ocs", show_default=True, help="ocs: one-cycle with stability search; dense, oneshot, three-stage, epi, gradual, laasp for comparison; or one a Python caller registered with compressor.register_schedule."),
    click.option("--criterion", type=click.Choice(list(CRITERIA)), default="ocs", show_default=True, help="Channel importance."),
    click.option("--cost-weighting", is_flag=True, help="Weight importance down for channels that cost more MACs."),
    click.option("--indicator", type=click.Choice(["jaccard", "epi"]), default="jaccard", show_default=True, help="Stability indicator of the ocs schedule."),
    click.option("--monitor-start", type=bounded_int(min=1), default=2, show_default=True, help="First epoch (numbered from 1) whose end runs the structure search."),
    click.option("--reg-start", callback=_reg_start, default="auto", show_default=True, help="Epoch (numbered from 1) at whose end the shrink of the selected channels starts (it acts on the steps after it), or 'auto': when stability plateaus, at the latest halfway from --monitor-start to the prune cap."),
    click.option("--reg-schedule", type=click.Choice(REG_SCHEDULES), default="target", show_default=True, help="How ocs sets the shrink's strength λ. target: each epoch, a per-step shrink w <- w·exp(-λ) set from how far the selected channels still are from --reg-target and the steps left until the prune cap; the prune waits until they are there (or the cap). fixed: the authors' --reg-lambda growing by --reg-delta, pruning on stability alone (for reproductions)."),
    click.option("--reg-target", type=finite_float(0, 1, min_open=True, max_open=True), default=1e-2, show_default=True, help="target: the fraction of their norm at the regularisation start that the selected channels must reach before the prune (ε)."),
    click.option("--reg-lambda", type=finite_float(min=0), default=1e-4, show_default=True, help="fixed: initial shrink strength λ."),
    click.option("--reg-delta", type=finite_float(min=0), default=1e-4, show_default=True, help="fixed: λ grows by this ..."),
    click.option("--reg-interval", type=bounded_int(min=1), default=1, show_default=True, help="fixed: ... every this many epochs."),
    click.option("--stability-threshold", type=finite_float(0, 1), default=0.999, show_default=True, help="Prune once the 3-epoch mean Jaccard reaches this."),
    click.option("--epi-threshold", type=finite_float(0, 1), default=0.983, show_default=True, help="Prune threshold of the EPI indicator."),
    click.option("--epi-window", type=bounded_int(min=1), default=5, show_default=True, help="Plans EPI compares with."),
    click.option("--max-prune-epoch", type=bounded_int(min=1), help="Prune at the end of this epoch (numbered from 1) at the latest [default: the epoch after the first 40% of --epochs; laasp: the last but one epoch]."),
    click.option("--prune-epoch", type=bounded_int(min=1), help="three-stage, laasp: (start to) prune at the end of this epoch (numbered from 1) [default: the epoch after the first third of --epochs]."),
    click.option("--criteria-pool", callback=_names, default=",".join(POOL_CRITERIA), show_default=True, help=f"laasp: criteria each step chooses from ({', '.join(POOL_CRITERIA)})."),
    click.option("--selection-samples", type=bounded_int(min=1), default=256, show_default=True, help="laasp: training images (a fixed subset) each candidate's loss is measured on."),
    click.option("--laasp-step", type=finite_float(0, 1, min_open=True, max_open=True), default=0.01, show_default=True, help="laasp: fraction of the MACs one step removes."),
    click.option("--laasp-group-fraction", type=finite_float(0, 1, min_open=True), help="laasp: instead, remove this fraction of the group's channels per step."),
    click.option("--laasp-shortlist", type=bounded_int(min=1), help="laasp: evaluate only the K candidates of a step with the lowest first-order (Taylor) loss estimate. Approximate: a step can choose differently from evaluating every candidate, and on ResNets it is no faster than the exact default (benchmarks/results/laasp_step.md) [default: every candidate]."),
    click.option("--recover-macs", type=finite_float(0, 1, max_open=True), default=0.1, show_default=True, help="laasp: slice and recover after each this much more MACs reduction (0: after every step)."),
    click.option("--recover-epochs", type=bounded_int(min=0), default=1, show_default=True, help="laasp: training epochs between pruning chunks (0: prune to the target at once)."),
    click.option("--max-prune-fraction", type=finite_float(0, 1, min_open=True), default=0.75, show_default=True, help="Per-group cap on the fraction of channels removed."),
    click.option("--round-to", callback=_round_to, help="Keep channel counts at multiples of N, or 'auto': the multiple --deploy-backend rewards, measured on this machine (a conv width sweep, cached) [default: 8 for groups of >= 16 channels]."),
    click.option("--deploy-backend", type=click.Choice(BENCH_BACKENDS), default=DEFAULT_DEPLOY_BACKEND, show_default=True, help="--round-to auto and --speedup: the runtime the model will ship on."),
    click.option("--deploy-device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True, help="--round-to auto and --speedup: where it will run (auto: cuda when there is a GPU)."),
    click.option("--min-width", type=bounded_int(min=1), default=1, show_default=True, help="Keep at least N channels per group."),
    click.option("--ignore", multiple=True, metavar="MODULE", help="Keep this module's channels fixed (repeatable)."),
    click.option("--reset-optimizer", is_flag=True, help="Drop optimizer state at the prune (as the method's authors' code does)."),
    # training
    click.option("--epochs", type=bounded_int(min=1), default=DEFAULT_EPOCHS, show_default=True, help="Total epochs, pruning included."),
    click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="sgd", show_default=True, help="SGD (Nesterov) or AdamW."),
    click.option("--lr", type=finite_float(min=0, min_open=True), default=0.1, show_default=True, help="Peak learning rate."),
    click.option("--momentum", type=finite_float(0, 1), default=0.9, show_default=True, help="SGD momentum."),
    click.option("--nesterov/--no-nesterov", default=True, show_default=True, help="Nesterov momentum for SGD."),
    click.option("--weight-decay", type=finite_float(min=0), default=5e-4, show_default=True, help="Weight decay."),
    click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default="step", show_default=True, help="Per-step schedule over the whole run."),
    click.option("--milestones", callback=_fractions, default="0.3,0.6,0.8,0.9", show_default=True, help="step: LR drops at these fractions of the run."),
    click.option("--gamma", type=finite_float(0, 1, min_open=True), default=0.2, show_default=True, help="step: LR factor at each milestone."),
    click.option("--label-smoothing", type=finite_float(0, 1), default=0.0, show_default=True, help="Label smoothing of the cross-entropy."),
    click.option("--amp", type=click.Choice(AMP_MODES), default="none", show_default=True, help="Mixed precision on CUDA."),
    click.option("--channels-last", is_flag=True, help="channels_last memory format on CUDA."),
    click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (again after the prune)."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
    click.option("--seed", type=bounded_int(0, MAX_SEED), default=0, show_default=True, help="Seed for init, data order and augmentation."),
    click.option("--refresh-bn", type=bounded_int(min=0), default=4, show_default=True, metavar="N", help="Before each validation (so each checkpoint, and the prune's 'before'), re-estimate the BatchNorm statistics on the epoch's first N training batches: the running averages trail the weights, most of all while the shrink runs, and would make the validation line, the best checkpoint and the shock wrong. Training never reads them. 0: keep the running averages."),
    click.option("--recalibrate-bn", type=bounded_int(min=0), default=0, show_default=True, metavar="N", help="Right after each prune, re-estimate the BatchNorm statistics on N training batches (0: off); the prune line and prune_shock then also give the top-1 after it."),
    click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar per epoch."),
]


def prune_options(command):
    for option in reversed(OPTIONS):
        command = option(command)
    return speedup_options(command)


@click.command("prune", cls=SectionedCommand, context_settings={"max_content_width": 110})
@prune_options
@verbosity_options
@click.pass_context
@user_errors
def prune_command(ctx: click.Context, **options) -> None:
    """Train MODEL once and prune it during training to a MACs budget (or, with --speedup,
    to a latency measured on the deploy target).

    Writes summary.json, metrics.jsonl, plan.json, run.png, model.pt and checkpoints to
    --out.  The default runs in a few minutes on a laptop CPU, offline."""
    try:
        train(*plan_prune(ctx, options))
    except KeyboardInterrupt:
        click.echo("interrupted; continue with --resume", err=True)
        sys.exit(130)


def plan_prune(ctx: click.Context, options: dict):
    """Every check of a prune (a fresh one's output directory, or what --resume continues)
    before anything trains: the (RunSpec, checkpoint payload or None) ``train`` takes.
    ``options`` are the prune options' values (``prune_options``); ``compress run`` calls it too."""
    options["compile"] = options.pop("compile_")
    resume, trust_code = options.pop("resume"), options.pop("trust_code")
    overwrite = options.pop("overwrite")
    return _plan_run(ctx, options, resume, trust_code, overwrite)


def train(spec, payload: dict | None) -> dict:
    """Run the planned prune to its end (a --speedup run then measured), print its summary."""
    # Here, not at the top: `compress --help` must not import torch (seconds).
    from compressor.training.run import run_prune

    summary = run_prune(spec, payload)
    if summary and spec.prune.speedup is not None:
        summary = _measure(spec)
    if summary:
        _print_summary(summary, spec.out)
    return summary


def _plan_run(ctx: click.Context, options: dict, resume: str | None, trust_code: bool, overwrite: bool):
    from compressor.training.checkpoint import LATEST, load_checkpoint
    from compressor.outdir import check_fresh_output, ensure_writable_dir
    from compressor.training.run import RunSpec, configs_from_dict, conflicts
    from compressor.trust import check_trusted

    from compressor.cli.speedup import (check_deploy_options_read, check_exclusive,
                                        check_no_deploy_options_on_resume, deploy_target, table_maker)

    model, weights, out = options.pop("model"), options.pop("weights"), options.pop("out")
    deploy = options.pop("deploy_backend"), options.pop("deploy_device")
    precision, batch = options.pop("deploy_precision"), options.pop("deploy_batch")
    threads = options.pop("deploy_threads")
    given_table = options.pop("latency_table")
    check_exclusive(ctx, options["speedup"])
    options["ignore"] = tuple(options["ignore"])
    if resume is None:
        _refuse_unused_data_options(ctx, options)
        check_deploy_options_read(ctx, options["speedup"], round_to_auto=options["round_to"] == "auto")
        _check_model_trusted(ctx, model, trust_code)
        out_dir = Path(out or f"runs/{model}-{options['schedule']}")
        check_fresh_output(out_dir, overwrite)
        ensure_writable_dir(out_dir, "--out", keep=False)  # now, not after the first epoch has trained
        target = deploy_target(*deploy, precision, batch, threads) \
            if options["speedup"] is not None and not given_table else None
        if options["round_to"] == "auto":
            options["round_to"] = _measure_round_to(*deploy, out_dir)
        data, train, prune = configs_from_dict(options)
        tables = None if prune.speedup is None else table_maker(target, prune.round_to, prune.max_prune_fraction,
                                                                prune.min_width, prune.ignore, given_table)
        return RunSpec(model, out_dir, data, train, prune, weights, latency_table=tables), None
    out_dir = Path(resume)
    _refuse_with_resume(ctx, weights)
    check_no_deploy_options_on_resume(ctx)
    payload = load_checkpoint(out_dir / LATEST)
    check_trusted(str(payload.get("model_name")), str(out_dir / LATEST), trust_code)
    given = {k: v for k, v in options.items() if user_said(ctx, k)}
    if given.get("round_to") == "auto":
        del given["round_to"]  # the run keeps the multiple it measured when it started
    display = {k: given.pop(k) for k in DISPLAY_ONLY if k in given}  # may change between sessions
    if user_said(ctx, "model") and model != payload["model_name"]:
        given["model"] = model
    differences = conflicts({**payload["config"], "model": payload["model_name"]}, given)
    if out is not None and Path(out) != out_dir:
        differences.append(f"out: run is in {out_dir}, given {out}")
    if differences:
        raise CompressorError("--resume refuses settings that differ from the run: " + "; ".join(differences))
    ensure_writable_dir(out_dir, "--resume directory")  # last: every refusal above leaves the run untouched
    data, train, prune = configs_from_dict({**payload["config"], **display}, str(out_dir / LATEST))
    return RunSpec(payload["model_name"], out_dir, data, train, prune, trust_code=trust_code), payload


def _check_model_trusted(ctx: click.Context, model: str, trust_code: bool) -> None:
    """Only a --model typed on this command line may name a ``module:factory`` without
    --trust-code: one read from a --config file or from the environment (a variable a shell
    profile or a CI job may have set long ago) is data until the user opts in."""
    from compressor.cli.common import ENV_PREFIX
    from compressor.trust import check_trusted

    source = ctx.get_parameter_source("model")
    if source == click.core.ParameterSource.COMMANDLINE:
        return
    where = (f"the variable {ENV_PREFIX}_{ctx.info_name.upper()}_MODEL" if source == click.core.ParameterSource.ENVIRONMENT
             else "the --config file")
    check_trusted(model, where, trust_code)


def _refuse_unused_data_options(ctx: click.Context, options: dict) -> None:
    """Options that another dataset would ignore without a word are refused: the sizes
    of the generated set, and a folder or a download for a set the package carries."""
    dataset = options["dataset"]
    if dataset in BUILT_IN_DATASETS:
        for name, what in (("data_dir", "a folder"), ("download", "a download")):
            if user_said(ctx, name) and options[name]:
                flag = f"--{name.replace('_', '-')}"
                raise CompressorError(f"{flag}: --dataset {dataset} comes with the package and needs no {what[2:]}; "
                                      f"drop {flag}, or name the dataset it is for with --dataset")
    if dataset == "synthetic":
        return
    typed = [f"--{name.replace('_', '-')}" for name in ("synthetic_train", "synthetic_val")
             if user_said(ctx, name)]
    if typed:
        raise CompressorError(f"{' and '.join(typed)} size(s) the generated synthetic set, but --dataset is "
                              f"{dataset}; add --dataset synthetic or drop {' and '.join(typed)}")


DISPLAY_ONLY = ("progress",)  # options that change what is shown, never what is computed


def _refuse_with_resume(ctx: click.Context, weights: str | None) -> None:
    """--config and --weights describe a fresh run; with --resume they would be ignored
    (the deploy options: ``check_no_deploy_options_on_resume``)."""
    if "config_file" in ctx.meta:
        raise CompressorError(f"--resume continues the run with its own settings; --config {ctx.meta['config_file']} "
                              "would be ignored, so it is refused (drop --config)")
    if weights is not None:
        raise CompressorError(f"--resume continues from the run's checkpoint; --weights {weights} would be ignored, "
                              "so it is refused (drop --weights)")


def _measure_round_to(backend: str, device: str, out_dir: Path) -> int:
    """--round-to auto: measure (or read the cached measurement of) what the deployment
    backend rewards, show the table, keep it with the run."""
    import json

    from compressor.bench.rounding import SweepConfig, auto_round_to
    from compressor.atomic import atomic_write_text
    from compressor.devices import auto_device

    device = auto_device(device)
    click.echo(f"--round-to auto: measuring how {backend} on {device} steps with channel count ...", err=True)
    choice, cached = auto_round_to(SweepConfig(backend=backend, device=device))
    click.echo(choice.table() + ("\n(measured earlier on this machine; cached)" if cached else ""))
    click.echo(f"--round-to auto -> {choice.multiple} for {backend} on {device}")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "round_to.json", json.dumps({**choice.to_dict(), "cached": cached}, indent=1))
    return choice.multiple


def _measure(spec) -> dict:
    """A --speedup run ends measured, not predicted: dense vs pruned on its target, once."""
    from compressor.bench.latency import DeployTarget
    from compressor.cli.speedup import record_measurement
    from compressor.engine.latency import LatencyTable
    from compressor.training.run import LATENCY_TABLE_FILE

    summary = json.loads((spec.out / "summary.json").read_text())
    saved = LatencyTable.load(spec.out / LATENCY_TABLE_FILE).target  # the target the plan was priced on
    target = DeployTarget(saved["backend"], saved["device"], saved["precision"], saved["batch_size"], saved["threads"])
    return record_measurement(spec.out, summary, target, saved.get("machine"))


def _print_summary(summary: dict, out: Path) -> None:
    from compressor.cli.speedup import speedup_words

    click.echo(
        f"done: {summary['model']} {summary['dense_macs'] / 1e6:.1f}M -> {summary['pruned_macs'] / 1e6:.1f}M MACs "
        f"(-{summary['macs_reduction']:.1%}), {summary['dense_params'] / 1e6:.3f}M -> "
        f"{summary['pruned_params'] / 1e6:.3f}M params, top-1 {summary['top1']:.2f}% "
        f"(best {summary['best_top1']:.2f}%), pruned after epoch {summary['prune_epoch'] or '-'}"
        f"{speedup_words(summary)}, {summary['wall_time_s']:.0f} s"
    )
    table = " latency_table.json" if "speedup_target" in summary else ""
    click.echo(f"artifacts in {out}: summary.json metrics.jsonl plan.json run.png model.pt checkpoint.pt{table}")

