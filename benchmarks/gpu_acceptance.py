"""The GPU acceptance run: one command, about 8 minutes on one CUDA GPU.

    python -m benchmarks.gpu_acceptance --out benchmarks/results

Steps (the ``STEPS`` table, in order): the machine and versions; a ResNet-50 pruned to
50 % of its MACs by the project's own engine (random init: latency and throughput do not
depend on the weights' values); ``pytest -m gpu``; AMP training images/s dense vs pruned
(channels_last, fp16 autocast and gradient scaler, as ``compress prune --amp fp16
--channels-last`` trains); ``compress bench`` of that model file through PyTorch, ONNX
Runtime's CUDA provider and TensorRT (fp16, INT8) at batch 1 and 64; the latency table
``--speedup`` prunes against, on the GPU (skipped, with the tool's own reason, while
``--speedup`` measures ONNX Runtime on the CPU only).

Each step runs in its own process with its own time budget (the budgets add up to less
than 8 minutes): a hung engine build is killed at its budget, and a crash that poisons
the CUDA context (an illegal access, a segfault inside a runtime) takes only its own step
with it.  A failed step never stops the others; the exit code is 1 when any step failed.
Results go to ``OUT/gpu_acceptance_<device>.md`` and ``.json`` (rewritten after every
step, so an interrupted run still leaves its report); exports, engines and each step's
log go to ``--work`` (a temp folder, removed when every step passed).

Without CUDA it refuses in one line before doing anything.  ``--dry-run`` runs every step
on the CPU at tiny sizes (ResNet-20, batch 1 and 2, a few iterations): what the unit
tests use to check the steps and the report without a GPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from compressor.atomic import atomic_write_text
from compressor.bench.timing import TimingConfig
from compressor.errors import one_line

ROOT = Path(__file__).resolve().parents[1]
FORMAT = "benchmarks.gpu_acceptance/1"
RUN_BUDGET_S = 480  # the promise: the whole run within 8 minutes
STARTUP_MARGIN_S = 20  # the parent's own imports and report writing, outside every step's budget
DRY_RUN_OUT = Path(tempfile.gettempdir()) / "gpu_acceptance_dry_run"  # its numbers are not results


@dataclass(frozen=True)
class Settings:
    """What the steps run: the GPU run's sizes, or the CPU dry run's tiny ones."""

    device: str
    model: str
    batch_sizes: tuple[int, ...]
    train_batch: int
    train_warmup: int
    train_steps: int
    timing: TimingConfig
    threads: int | None  # CPU threads of the runtimes; None: every usable core
    pytest_args: tuple[str, ...]
    flops_reduction: float = 0.5
    # Each step's budget times this: the GPU run keeps its 8-minute promise (1); the dry run checks
    # the steps' logic, not their speed, and must pass on a loaded CPU where importing torch in a
    # child can take longer than a GPU step's whole budget.
    budget_scale: float = 1.0


# Timing: >= 30 runs and 0.6 s per variant in 3 interleaved rounds -- enough for a stable
# median on a GPU (ResNet-50 b64 fp32 is ~25 ms a call) and small beside the engine builds.
GPU = Settings("cuda", "resnet50", (1, 64), 128, 10, 30,
               TimingConfig(warmup_s=0.2, warmup_runs=10, min_runs=30, min_time_s=0.6, rounds=3),
               None, ("-m", "gpu"))
# tests/gpu only: every GPU test skips on the CPU, and collecting the whole suite costs
# more than the dry run's other steps together on a small machine
DRY_RUN = Settings("cpu", "resnet20", (1, 2), 2, 1, 2,
                   TimingConfig(warmup_s=0.0, warmup_runs=1, min_runs=3, min_time_s=0.0, rounds=1),
                   1, ("-m", "gpu", "tests/gpu"), budget_scale=30.0)


@dataclass(frozen=True)
class Job:
    """One acceptance run: its settings and the folder its steps share."""

    settings: Settings
    work: Path
    dry_run: bool

    @property
    def model_file(self) -> Path:
        return self.work / "models" / f"{self.settings.model}.pt"

    def result_file(self, step: str) -> Path:
        return self.work / "steps" / f"{step}.json"

    def log_file(self, step: str) -> Path:
        return self.work / "logs" / f"{step}.log"

    def budget(self, step: "Step") -> float:
        """Seconds ``step`` may run in this job (its budget, scaled for the dry run)."""
        return step.budget_s * self.settings.budget_scale


@dataclass(frozen=True)
class Outcome:
    """What a step reports: ok or skipped (a failure is an exception)."""

    status: str
    detail: str
    data: dict = field(default_factory=dict)


class StepFailed(Exception):
    """A step's own verdict that it failed, with what it did measure (kept in the report)."""

    def __init__(self, message: str, data: dict | None = None):
        super().__init__(message)
        self.data = data or {}


@dataclass(frozen=True)
class StepResult:
    name: str
    status: str  # ok, skipped or failed
    detail: str
    seconds: float
    budget_s: float
    data: dict


@dataclass(frozen=True)
class Context:
    """What a running step sees: the job, its own budget, and a way to save partial data
    (read by the parent when the step is killed at its budget)."""

    job: Job
    step: str
    budget_s: float

    @property
    def settings(self) -> Settings:
        return self.job.settings

    def save_partial(self, data: dict) -> None:
        write_result(self.job.result_file(self.step), {"status": "failed", "detail": "unfinished", "data": data,
                                                      "partial": True})


# -- the steps ------------------------------------------------------------------------------------
def step_environment(ctx: Context) -> Outcome:
    """The machine, driver, CUDA and versions, as ``compress bench`` records them."""
    from compressor.bench.environment import describe
    from compressor.export.ort import available_providers
    from compressor.export.tensorrt import tensorrt_available

    environment = describe(ctx.settings.threads)
    environment["tensorrt_available"] = tensorrt_available()[1]
    environment["onnxruntime_providers"] = available_providers()
    gpu = environment["gpu"]
    detail = (f"{gpu['name']}, driver {gpu.get('driver')}, CUDA {gpu['cuda']}, cuDNN {gpu['cudnn']}" if gpu
              else f"no GPU ({environment['cpu']})")
    return Outcome("ok", detail, environment)


def step_prune(ctx: Context) -> Outcome:
    """The model every later step times: pruned by the engine as ``compress info
    --flops-reduction 0.5`` prunes it (L2 ranking, default rounding), saved as a model file."""
    import torch

    from compressor import ModelSpec, SelectionConfig, count_macs, prune_once, save_pruned
    from compressor.models import build_model, get_entry

    settings = ctx.settings
    entry = get_entry(settings.model)
    model = build_model(settings.model, num_classes=entry.num_classes).eval()
    example = torch.zeros(1, *entry.input_size)
    config = SelectionConfig(settings.flops_reduction)  # default rounding: 8 for groups of >= 16 channels
    result = prune_once(model, example, config)
    pruned, graph, plan = result.model, result.graph, result.plan
    spec = ModelSpec(settings.model, entry.num_classes, tuple(entry.input_size))
    save_pruned(ctx.job.model_file, pruned, spec, plan)
    data = {"model": settings.model, "input_size": list(entry.input_size), "dense_macs": graph.dense_macs,
            "pruned_macs": count_macs(pruned, example), "flops_reduction": settings.flops_reduction}
    ratio = data["dense_macs"] / data["pruned_macs"]
    return Outcome("ok", f"{settings.model}: {data['dense_macs'] / 1e9:.2f} -> {data['pruned_macs'] / 1e9:.2f} GMACs "
                         f"({ratio:.2f}x)", data)


def step_pytest(ctx: Context) -> Outcome:
    """``pytest -m gpu`` in its own process, stopped 10 s before the step's budget so the
    report still gets its last line."""
    log = ctx.job.work / "logs" / "pytest-output.log"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *ctx.settings.pytest_args]
    try:
        done = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True,
                              timeout=max(1.0, ctx.budget_s - 10))
    except subprocess.TimeoutExpired as error:
        tail = _last_line(error.stdout.decode() if isinstance(error.stdout, bytes) else error.stdout or "")
        raise StepFailed(f"pytest did not finish within {ctx.budget_s - 10:.0f} s; last line: {tail}") from None
    atomic_write_text(log, done.stdout + done.stderr)
    summary = _last_line(done.stdout)
    data = {"command": " ".join(command[1:]), "returncode": done.returncode, "summary": summary,
            "failed": [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]}
    if done.returncode == 5:
        return Outcome("skipped", "no test marked gpu was collected", data)
    if done.returncode != 0:
        first = f"; first: {data['failed'][0]}" if data["failed"] else ""
        raise StepFailed(f"pytest exit {done.returncode}: {summary}{first}", data)
    return Outcome("ok", summary, data)


def _last_line(text: str) -> str:
    lines = [line.strip("= ") for line in text.splitlines() if line.strip()]
    return one_line(lines[-1], 200) if lines else "(no output)"


def step_train(ctx: Context) -> Outcome:
    """Training images/s of dense and pruned: the step ``compress prune --amp fp16
    --channels-last`` takes (its optimizer, autocast, gradient scaler), on random images."""
    from compressor.bench.subjects import resolve

    group = resolve([str(ctx.job.model_file)])[0]
    rows = [_train_rate(subject.model, subject.name, subject.input_size, ctx.settings) for subject in group.subjects]
    ratio = rows[1]["images_per_s"] / rows[0]["images_per_s"]
    data = {"batch_size": ctx.settings.train_batch, "amp": "fp16" if ctx.settings.device == "cuda" else "none",
            "channels_last": ctx.settings.device == "cuda", "rows": rows, "speedup": ratio}
    return Outcome("ok", f"dense {rows[0]['images_per_s']:.0f} img/s, pruned {rows[1]['images_per_s']:.0f} img/s "
                         f"({ratio:.2f}x)", data)


def _train_rate(model, name: str, input_size, settings: Settings) -> dict:
    step = _training_step(model, input_size, settings)
    cuda = settings.device == "cuda"
    for _ in range(settings.train_warmup):
        step()
    _synchronise(cuda)
    started = time.perf_counter()
    for _ in range(settings.train_steps):
        step()
    _synchronise(cuda)
    seconds = time.perf_counter() - started
    return {"model": name, "steps": settings.train_steps, "step_ms": 1000 * seconds / settings.train_steps,
            "images_per_s": settings.train_batch * settings.train_steps / seconds}


def _training_step(model, input_size, settings: Settings) -> Callable[[], None]:
    """One optimizer step on a fixed random batch, as the prune's Trainer takes it on CUDA
    (channels_last, fp16 autocast, the gradient scaler through ``scaled_step``); plain
    fp32 in the dry run, as the Trainer does on the CPU."""
    import torch

    from compressor.training.loop import TrainConfig, make_optimizer, scaled_step

    cuda = settings.device == "cuda"
    model = model.to(settings.device).train()
    model = model.to(memory_format=torch.channels_last) if cuda else model
    optimizer = make_optimizer(TrainConfig(amp="fp16", channels_last=cuda), model)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    images = torch.randn(settings.train_batch, *input_size, device=settings.device)
    images = images.contiguous(memory_format=torch.channels_last) if cuda else images
    labels = torch.randint(0, 10, (settings.train_batch,), device=settings.device)  # every zoo classifier has >= 10

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        scaler.scale(loss).backward()
        scaled_step(scaler, optimizer)

    return step


def _synchronise(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


def step_bench_torch(ctx: Context) -> Outcome:
    return bench_step(ctx, "torch", ("fp32", "fp16"))


def step_bench_onnxruntime(ctx: Context) -> Outcome:
    # "onnxruntime" is the CUDA provider on a GPU (a CPU fallback is refused, not timed)
    # and the CPU provider in the dry run: one backend name serves both
    return bench_step(ctx, "onnxruntime", ("fp32", "fp16"))


def step_bench_tensorrt_fp16(ctx: Context) -> Outcome:
    return tensorrt_step(ctx, "fp16")


def step_bench_tensorrt_int8(ctx: Context) -> Outcome:
    return tensorrt_step(ctx, "int8")


def tensorrt_step(ctx: Context, precision: str) -> Outcome:
    """Skipped, with the reason, where ``import tensorrt`` fails or there is no GPU."""
    from compressor.export.tensorrt import tensorrt_available

    ok, reason = tensorrt_available()
    if not ok:
        return Outcome("skipped", reason)
    return bench_step(ctx, "tensorrt", (precision,))


def bench_step(ctx: Context, backend: str, precisions: tuple[str, ...]) -> Outcome:
    """``compress bench MODEL.pt`` (dense rebuilt beside the pruned file, exports cached next
    to it and shared by the steps), one batch size at a time so a step stopped at its budget
    keeps the batches it finished."""
    import torch

    from compressor.bench.bench import BenchConfig, run_bench
    from compressor.bench.subjects import resolve

    settings = ctx.settings
    torch.manual_seed(0)  # the same dense weights in every step: its cached ONNX is reused
    groups = resolve([str(ctx.job.model_file)])
    data = None
    for batch in settings.batch_sizes:
        config = BenchConfig((backend,), settings.device, (batch,), precisions, settings.threads, settings.timing)
        data = merge_bench(data, run_bench(groups, config).to_dict())
        ctx.save_partial(data)
    return bench_outcome(data)


def merge_bench(into: dict | None, more: dict) -> dict:
    if into is None:
        return more
    config = {**into["config"], "batch_sizes": [*into["config"]["batch_sizes"], *more["config"]["batch_sizes"]]}
    return {**into, "config": config, "records": into["records"] + more["records"],
            "skipped": into["skipped"] + more["skipped"]}


def bench_outcome(data: dict) -> Outcome:
    """ok when every cell the backend can run here was timed; a cell it could run but did
    not (an export, a build or a session that failed) fails the step; a backend or precision
    this machine cannot run at all makes skipped cells, and only skipped cells skip the step."""
    from compressor.bench.backends import BACKENDS

    device = data["config"]["device"]
    broken = [s for s in data["skipped"] if BACKENDS[s["backend"]].unavailable(device, s["precision"]) is None]
    if broken:
        first = broken[0]
        raise StepFailed(f"{first['model']} {first['precision']} batch {first['batch_size']}: {first['reason']}", data)
    if not data["records"]:
        reasons = dict.fromkeys(s["reason"] for s in data["skipped"])
        return Outcome("skipped", "; ".join(reasons), data)
    speedups = [f"{r['precision']} b{r['batch_size']} {r['speedup']:.2f}x" for r in data["records"] if r.get("speedup")]
    return Outcome("ok", "pruned vs dense: " + ", ".join(speedups), data)


def step_latency_table(ctx: Context) -> Outcome:
    """The per-layer latency table ``--speedup`` prunes against, measured on the run's
    device as ``compress prune --speedup`` measures it (ONNX Runtime; fp16 on CUDA, the
    precision a GPU deploys in).  A target the table cannot be measured on yet is skipped
    with the tool's own one-line reason, so the report says what is missing."""
    from compressor.bench.latency import DeployTarget, latency_table
    from compressor.errors import CompressorError
    from compressor.models import build_model, get_entry

    settings = ctx.settings
    precision = "fp16" if settings.device == "cuda" else "fp32"
    target = DeployTarget("onnxruntime", settings.device, precision, 1, settings.threads)
    try:
        target.check_supported()
    except CompressorError as refused:
        return Outcome("skipped", str(refused))
    entry = get_entry(settings.model)
    model = build_model(settings.model, num_classes=entry.num_classes).eval()
    timing = {} if settings.device == "cuda" else {"timing": settings.timing, "anchor_timing": settings.timing}
    table, _ = latency_table(model, tuple(entry.input_size), target, refresh=True, **timing)
    data = {"target": table.target, "layers": len(table.layers), "anchors": [list(a) for a in table.anchors],
            "dense_ms": table.dense_ms, "measure_s": table.measure_s}
    return Outcome("ok", f"{len(table.layers)} layers, dense {table.dense_ms:.3f} ms, measured in "
                         f"{table.measure_s:.1f} s", data)


@dataclass(frozen=True)
class Step:
    name: str
    budget_s: float  # the step's process is killed past this
    run: Callable[[Context], Outcome]
    what: str


# Budgets (estimates until the first GPU run; the report shows each step's time beside its
# budget): engine builds dominate (two models x two batch sizes per precision, ResNet-50 at
# builder level 3), then ONNX Runtime (two exports, a CUDA session per cell); every child
# pays ~5-10 s of imports and CUDA start-up.  Together under RUN_BUDGET_S - STARTUP_MARGIN_S.
STEPS: tuple[Step, ...] = (
    Step("environment", 15, step_environment, "device, driver, CUDA and package versions"),
    Step("prune", 20, step_prune, "the model pruned to 50 % of its MACs by the engine (random init)"),
    Step("pytest-gpu", 100, step_pytest, "pytest -m gpu"),
    Step("train-amp", 30, step_train, "AMP training images/s, dense vs pruned, channels_last"),
    Step("bench-torch", 25, step_bench_torch, "compress bench: PyTorch eager fp32, fp16"),
    Step("bench-onnxruntime-cuda", 60, step_bench_onnxruntime,
         "compress bench: ONNX Runtime (CUDA provider) fp32, fp16"),
    Step("bench-tensorrt-fp16", 95, step_bench_tensorrt_fp16, "compress bench: TensorRT engines, fp16"),
    Step("bench-tensorrt-int8", 100, step_bench_tensorrt_int8, "compress bench: TensorRT engines, INT8 (QDQ ONNX)"),
    Step("latency-table", 10, step_latency_table, "the latency table --speedup needs, on CUDA"),
)
STEP_NAMES = {step.name: step for step in STEPS}


# -- running the steps ---------------------------------------------------------------------------
def child_env() -> dict:
    """A child finds the benchmarks package (and a plain checkout's compressor) from any cwd."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_here(step: Step, job: Job, budget_s: float | None = None) -> StepResult:
    """Run one step in this process; any exception is the step's failure, in one line."""
    started = time.perf_counter()
    try:
        outcome = step.run(Context(job, step.name, budget_s or job.budget(step)))
    except StepFailed as error:
        outcome = Outcome("failed", one_line(str(error)), error.data)
    except Exception as error:  # noqa: BLE001 - a step's failure is recorded, never raised
        outcome = Outcome("failed", one_line(error), {})
    return StepResult(step.name, outcome.status, outcome.detail, time.perf_counter() - started, step.budget_s,
                      outcome.data)


def run_isolated(step: Step, job: Job) -> StepResult:
    """Run one step in a child process killed (with whatever it started) at its budget, or
    when this process is interrupted: the child has its own session, so Ctrl-C misses it."""
    result_file, log_file = job.result_file(step.name), job.log_file(step.name)
    result_file.unlink(missing_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "benchmarks.gpu_acceptance", "--step", step.name, "--work", str(job.work)]
    command += ["--dry-run"] if job.dry_run else []
    started = time.perf_counter()
    with open(log_file, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=child_env(), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=job.budget(step))
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return collect(step, result_file, log_file, code, time.perf_counter() - started, job.budget(step))


def collect(step: Step, result_file: Path, log_file: Path, code: int | None, seconds: float,
            budget_s: float | None = None) -> StepResult:
    """The child's own report, or why there is none: killed at its budget (its partial data
    kept), or exited without writing one (a crash: the log's last line says what)."""
    written = read_result(result_file)
    if code is None:
        kept = "; its finished part kept" if written and written.get("data") else ""
        status, detail = "failed", f"over its {budget_s or step.budget_s:g} s budget (killed{kept})"
    elif written is None or written.get("partial"):
        status, detail = "failed", f"exited with code {code} and no result; log: {_last_line(_read(log_file))}"
    else:
        status, detail = written["status"], written["detail"]
    data = (written or {}).get("data") or {}
    return StepResult(step.name, status, detail, seconds, step.budget_s, data)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def read_result(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_result(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=1, default=str))


Launch = Callable[[Step, Job], StepResult]


def run_all(job: Job, steps: tuple[Step, ...], out: Path, command: str, launch: Launch = run_isolated,
            say: Callable[[str], None] = lambda line: None) -> tuple[dict, list[Path]]:
    """Every step in order, whatever the others did; the report rewritten after each."""
    report = new_report(job, command)
    started = time.perf_counter()
    for step in steps:
        say(f"{step.name}: {step.what} (budget {step.budget_s:g} s) ...")
        result = launch(step, job)
        report["steps"].append(dataclasses.asdict(result))
        if result.name == "environment" and result.status == "ok":
            report["environment"] = result.data
        report["total_s"] = round(time.perf_counter() - started, 1)
        report["failed"] = [s["name"] for s in report["steps"] if s["status"] == "failed"]
        say(f"  {result.status}: {result.detail} ({result.seconds:.1f} s)")
        write_report(report, out)
    return report, write_report(report, out)


def new_report(job: Job, command: str) -> dict:
    return {"format": FORMAT, "command": command, "dry_run": job.dry_run,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "budget_s": RUN_BUDGET_S, "settings": dataclasses.asdict(job.settings), "environment": None,
            "steps": [], "total_s": 0.0, "failed": []}


# -- the report ----------------------------------------------------------------------------------
def device_slug(report: dict) -> str:
    """The file-name part naming the machine: the GPU's name, lower-case and dashed."""
    gpu = (report.get("environment") or {}).get("gpu")
    name = gpu["name"] if gpu else ("dry-run-cpu" if report["dry_run"] else "unknown-gpu")
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def write_report(report: dict, out: Path) -> list[Path]:
    stem = out / f"gpu_acceptance_{device_slug(report)}"
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    atomic_write_text(json_path, json.dumps(report, indent=1, default=str))
    atomic_write_text(md_path, markdown(report))
    return [md_path, json_path]


def markdown(report: dict) -> str:
    from compressor.bench.report import environment_line

    env = report.get("environment")
    failed = report["failed"]
    lines = [f"# GPU acceptance run{' (CPU dry run)' if report['dry_run'] else ''}", "",
             f"Command: `{report['command']}`", "",
             f"Machine: {environment_line(env) if env else 'unknown (the environment step did not finish)'}", "",
             f"Started {report['started']}; {report['total_s']:.0f} s of a {report['budget_s']} s budget; "
             f"{len(failed)} step(s) failed{': ' + ', '.join(failed) if failed else ''}.", "",
             "| step | status | time s | budget s | detail |", "|---|---|---|---|---|"]
    lines += [f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {s['budget_s']:g} | {_cell(s['detail'])} |"
              for s in report["steps"]]
    for step in report["steps"]:
        lines += step_section(step)
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def step_section(step: dict) -> list[str]:
    data = step["data"]
    if "records" in data:
        return ["", f"## {step['name']}", "", *bench_table(data)]
    if "rows" in data:
        header = ["", f"## {step['name']}", "",
                  f"Batch {data['batch_size']}, AMP {data['amp']}, channels_last {data['channels_last']}; "
                  f"pruned / dense = {data['speedup']:.2f}x.", "",
                  "| model | steps | step ms | images/s |", "|---|---|---|---|"]
        return header + [f"| {r['model']} | {r['steps']} | {r['step_ms']:.1f} | {r['images_per_s']:.0f} |"
                         for r in data["rows"]]
    return []


def bench_table(data: dict) -> list[str]:
    """``compress bench``'s own columns and skipped lines."""
    from compressor.bench.bench import BenchResult
    from compressor.bench.report import COLUMNS, rows

    result = BenchResult(data["environment"], data["config"], data["records"], data["skipped"])
    lines = ["| " + " | ".join(title for title, _, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(result)]
    providers = dict.fromkeys(str(r["provider"]) for r in data["records"])
    lines += ["", "Ran on: " + "; ".join(providers) + "."] if providers else []
    skipped = dict.fromkeys(f"- {s['backend']} {s['precision']} batch {s['batch_size']}: {s['reason']}"
                            for s in data["skipped"])
    return lines + (["", "Skipped:", "", *skipped] if skipped else [])


# -- the command line ----------------------------------------------------------------------------
def refusal(dry_run: bool) -> str | None:
    """The one line printed instead of running, or None."""
    missing = not_installed_reason()
    if missing:
        return f"Error: cannot run: {missing}"
    none = None if dry_run else no_cuda_reason()
    return f"Error: no CUDA device: {none}" if none else None


def no_cuda_reason() -> str | None:
    """Why PyTorch sees no GPU, or None.  A warning torch raises while looking (an old
    driver, say) becomes part of the reason, not a second line."""
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if available:
        return None
    why = "; ".join(one_line(str(w.message), 200) for w in caught)
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
    return (f"PyTorch {torch.__version__} ({build}) sees none{': ' + why if why else ''} "
            "(--dry-run checks the steps on the CPU)")


def not_installed_reason() -> str | None:
    """compressor.export and compressor.models exist only once installed (pyproject's package-dir)."""
    try:
        importlib.import_module("compressor.export")
    except ImportError as error:
        return f"the project is not installed (pip install -e .): {one_line(error, 150)}"
    return None


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder for gpu_acceptance_<device>.md and .json [default: benchmarks/results; "
                                      f"with --dry-run {DRY_RUN_OUT}, never the results folder]")
    parser.add_argument("--work", help="folder for models, exports, engines and step logs [default: a temp "
                                       "folder, removed when every step passed]")
    parser.add_argument("--steps", help=f"comma-separated subset, in table order: {', '.join(STEP_NAMES)}")
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU at tiny sizes (no GPU needed)")
    parser.add_argument("--step", choices=sorted(STEP_NAMES), help=argparse.SUPPRESS)  # a child: run this step
    return parser.parse_args(argv)


def selected(text: str | None) -> tuple[Step, ...]:
    if not text:
        return STEPS
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in STEP_NAMES]
    if unknown:
        raise SystemExit(f"Error: unknown step '{unknown[0]}'; choose from {', '.join(STEP_NAMES)}")
    return tuple(step for step in STEPS if step.name in names)


def child_main(args: argparse.Namespace) -> int:
    """One step, in the process the parent started for it: its result goes to a file."""
    job = Job(DRY_RUN if args.dry_run else GPU, Path(args.work), args.dry_run)
    if job.settings.threads:  # the dry run's one thread: two spin against each other on a busy small machine
        import torch

        torch.set_num_threads(job.settings.threads)
    result = run_here(STEP_NAMES[args.step], job)
    write_result(job.result_file(args.step), {"status": result.status, "detail": result.detail, "data": result.data})
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.step:
        return child_main(args)
    steps = selected(args.steps)
    line = refusal(args.dry_run)
    if line:
        print(line, file=sys.stderr)
        return 1
    out = Path(args.out or (DRY_RUN_OUT if args.dry_run else "benchmarks/results"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu-acceptance-"))
    job = Job(DRY_RUN if args.dry_run else GPU, work.resolve(), args.dry_run)
    command = "python -m benchmarks.gpu_acceptance " + " ".join(argv if argv is not None else sys.argv[1:])
    report, paths = run_all(job, steps, out, command.strip(), launch=run_isolated,
                            say=lambda line: print(line, flush=True))
    print(f"{report['total_s']:.0f} s; wrote {', '.join(str(p) for p in paths)}")
    if report["failed"]:
        print(f"failed: {', '.join(report['failed'])} (logs in {work})")
        return 1
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
