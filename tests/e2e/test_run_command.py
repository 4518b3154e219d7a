"""``compress run`` end to end on CPU: one real pipeline (prune -> export with INT8 -> eval ->
bench -> report) of a ResNet-20 on a small folder of colour images it learns for certain (so
the INT8 gate passes), whose report must say exactly what the stages' own files say; a
--resume that runs only the stages whose files are gone; a prune killed mid-training that
--resume finishes; and refusals that are one line and change nothing."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from compressor.artifacts import RunReport, RunStages, problems
from compressor.cli import main
from compressor.report.collect import EXPORT_PRECISION
from compressor.report.render import page
from tests import hostile
from tests.cli_runs import AFTER_CHECKPOINT, kill_at_checkpoint, make_image_folder, metrics
from tests.hostile import assert_one_line_error, one_line_error, snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST_BENCH = ["--warmup-s", "0", "--warmup-runs", "1", "--min-runs", "3", "--min-time-s", "0", "--rounds", "1",
              "--threads", "1", "--bench-batch-size", "1,2"]
PRUNE_FILES = ("summary.json", "model.pt", "plan.json", "metrics.jsonl", "run.png")
BENCH_FILES = ("bench/bench.json", "bench/bench.md", "bench/bench.png")
REPORT_FILES = ("report.json", "report.md", "report.html")


def colour_args(images: Path, epochs: int = 3) -> list[str]:
    return ["--model", "resnet20", "--dataset", "imagefolder", "--data-dir", str(images), "--input-size", "16",
            "--batch-size", "16", "--epochs", str(epochs), "--max-prune-epoch", "1", "--monitor-start", "1",
            "--no-progress"]


def run(*args) -> Result:
    return CliRunner().invoke(main, ["run", *map(str, args)])


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def fingerprint(root: Path, names) -> dict:
    """name -> (mtime, sha256) of each file."""
    return {name: ((root / name).stat().st_mtime_ns, hashlib.sha256((root / name).read_bytes()).hexdigest())
            for name in names}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("run-images") / "images")


@pytest.fixture(scope="module")
def pipeline(images, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("run") / "pipeline"
    result = run(*colour_args(images), "--int8", "--calib-samples", "64", *FAST_BENCH, "--out", out)
    assert result.exit_code == 0, result.output
    return out, result.stdout


def by_name(report: dict) -> dict:
    return {artifact["name"]: artifact for artifact in report["artifacts"]}


def test_one_command_writes_every_stage_where_the_separate_commands_would(pipeline):
    out, stdout = pipeline
    for name in (*PRUNE_FILES, "eval.json", "export/manifest.json", "export/model.onnx", "export/model_int8.onnx",
                 *BENCH_FILES, *REPORT_FILES, "stages.json"):
        assert (out / name).is_file(), name
    for number, stage in enumerate(("prune", "export", "eval", "bench", "report"), 1):
        assert stdout.count(f"stage {number}/5 {stage}: started") == 1, stdout
        assert stdout.count(f"stage {number}/5 {stage}: done in ") == 1, stdout
    for command in ("compress prune:", "compress export:", "compress eval:", "compress bench:"):
        assert stdout.count(command) == 1, (command, stdout)  # each stage's own start line, once
    manifest = read(out / "export/manifest.json")
    assert manifest["status"] == "ok" and manifest["int8"]["check"]["passed"]
    stages = read(out / "stages.json")
    assert set(stages["stages"]) == {"prune", "export", "eval", "bench", "report"}
    assert problems(RunStages, stages) == [] and problems(RunReport, read(out / "report.json")) == []


def test_the_report_copies_every_figure_from_the_stages_files(pipeline):
    out, _ = pipeline
    report, summary = read(out / "report.json"), read(out / "summary.json")
    evaluation, manifest, bench = read(out / "eval.json"), read(out / "export/manifest.json"), read(out / "bench/bench.json")
    artifacts = by_name(report)
    dense = artifacts["dense fp32"]
    assert (dense["macs"], dense["params"]) == (summary["dense_macs"], summary["dense_params"])
    assert report["prune"]["top1_before_prune"] == summary["prune_shocks"][0]["top1_before"]
    for key in ("pruned_macs", "macs_reduction", "top1", "best_top1"):
        assert report["prune"][key] == summary[key]
    rows = {Path(row["file"]).name: row for row in evaluation["rows"]}
    torch_row = next(row for row in evaluation["rows"] if row["backend"] == "pytorch")
    pytorch = artifacts["pruned fp32 PyTorch"]
    assert (pytorch["top1"], pytorch["top5"]) == (torch_row["top1"], torch_row["top5"])
    assert (pytorch["macs"], pytorch["params"]) == (summary["pruned_macs"], summary["pruned_params"])
    assert pytorch["bytes"] == (out / "model.pt").stat().st_size
    for name, label in (("model.onnx", "pruned fp32 ONNX"), ("model_int8.onnx", "pruned int8 ONNX")):
        artifact = artifacts[label]
        assert artifact["file"] == f"export/{name}" and artifact["precision"] == EXPORT_PRECISION[name]
        assert (artifact["top1"], artifact["top5"]) == (rows[name]["top1"], rows[name]["top5"])
        assert (artifact["bytes"], artifact["macs"]) == (manifest["files"][name]["size"], manifest["macs"])
    # every cell bench timed is in the report exactly once, with bench's own numbers
    cells = [(cell["backend"], cell["precision"], cell["batch_size"], cell["median_ms"], cell["speedup"])
             for artifact in report["artifacts"] for cell in artifact["latency"]]
    timed = [(r["backend"], r["precision"], r["batch_size"], r["median_ms"], r.get("speedup")) for r in bench["records"]]
    assert sorted(cells) == sorted(timed) and len(timed) == 12  # {torch, ort} fp32 + ort int8, 2 batches, 2 variants
    for cell in artifacts["pruned int8 ONNX"]["latency"]:
        assert (cell["backend"], cell["precision"]) == ("onnxruntime", "int8")


def test_report_md_shows_the_same_numbers(pipeline):
    out, _ = pipeline
    report, text = read(out / "report.json"), (out / "report.md").read_text()
    lines = text.splitlines()
    for artifact in report["artifacts"]:
        row = next(line for line in lines if line.startswith(f"| {artifact['name']} | {artifact['file'] or '-'} |"))
        if artifact["top1"] is not None:
            assert f"| {artifact['top1']:.2f} |" in row, row
        for cell in artifact["latency"]:
            start = f"| {artifact['name']} | {cell['backend']} | {cell['precision']} | {cell['batch_size']} | "
            timed = next(line for line in lines if line.startswith(start))
            assert timed.startswith(start + f"{cell['median_ms']:.3f} |"), timed
            if cell["speedup"] is not None:
                assert f"| {cell['speedup']:.2f}x |" in timed, timed
    assert "![run.png](run.png)" in text and "![bench/bench.png](bench/bench.png)" in text


def test_report_html_stands_alone(pipeline):
    out, _ = pipeline
    text = (out / "report.html").read_text()
    assert "<script" not in text.lower() and not re.search(r"(src|href)=\"(?!data:)", text)
    assert "http://" not in text and "https://" not in text
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,[A-Za-z0-9+/=]+">', text)) == 2


def test_every_string_from_a_file_is_escaped_in_the_html(pipeline):
    out, _ = pipeline
    report = read(out / "report.json")
    hostile_text = '<script>alert("x")</script>&'
    report["model"] = report["out"] = hostile_text
    report["artifacts"][1]["file"] = hostile_text
    report["figures"] = ["<img onerror=x>.png"]  # not a file there: left out, and its name never raw
    text = page(report, out)
    assert "<script>" not in text and "<img onerror" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in text


def test_resume_runs_only_the_stages_whose_files_are_gone(pipeline, tmp_path):
    source, _ = pipeline
    out = tmp_path / "copy"
    shutil.copytree(source, out)  # the other tests read the pipeline itself
    kept = ("checkpoint.pt", *PRUNE_FILES, "export/manifest.json", "export/model.onnx", "export/model_int8.onnx",
            "eval.json")
    before = fingerprint(out, kept)
    old_bench = read(out / "bench/bench.json")
    for name in (*BENCH_FILES, *REPORT_FILES):
        (out / name).unlink()
    result = run("--resume", out)
    assert result.exit_code == 0, result.output
    assert fingerprint(out, kept) == before  # prune, export and eval neither ran nor touched a file
    for number, stage in enumerate(("prune", "export", "eval"), 1):
        assert f"stage {number}/5 {stage}: done earlier" in result.stdout, result.stdout
    assert "stage 4/5 bench: started" in result.stdout and "stage 5/5 report: started" in result.stdout
    assert "compress prune:" not in result.stdout and "compress export:" not in result.stdout
    bench = read(out / "bench/bench.json")
    assert bench["config"] == old_bench["config"]  # the pipeline's own bench settings, kept by stages.json
    latency = [c["median_ms"] for a in read(out / "report.json")["artifacts"] for c in a["latency"]]
    assert sorted(latency) == sorted(r["median_ms"] for r in bench["records"])  # the new timings, not the old


def test_a_prune_killed_mid_training_is_finished_by_resume(images, tmp_path):
    out = tmp_path / "killed"
    args = [*colour_args(images, epochs=2), "--bench-backend", "torch", *FAST_BENCH]
    kill_at_checkpoint(args, out, 1, AFTER_CHECKPOINT, command="run")
    assert not (out / "stages.json").exists() and not (out / "summary.json").exists()
    result = run("--resume", out)
    assert result.exit_code == 0, result.output
    assert [m["epoch"] for m in metrics(out)] == [1, 2]  # epoch 1 not trained again
    assert "stage 1/5 prune: started" in result.stdout and (out / "report.html").is_file()
    assert read(out / "stages.json")["stages"]["prune"]["command"] == f"compress prune --resume {out}"


# -- refusals: one line, nothing changed ------------------------------------------------------


def test_a_non_empty_out_without_resume_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    before = snapshot(tmp_path)
    one_line_error(run("--epochs", "1", "--out", out), str(out), "not empty")
    assert snapshot(tmp_path) == before


def test_a_finished_pipeline_without_resume_is_refused_and_left_alone(pipeline):
    out, _ = pipeline
    before = snapshot(out)
    one_line_error(run("--epochs", "1", "--out", out), "--resume")
    assert snapshot(out) == before


@pytest.mark.parametrize("args, hint", [(["--bench-batch-size", "8"], "bench_batch_sizes"),
                                        (["--epochs", "9"], "epochs"),
                                        (["--no-int8"], None)])
def test_resume_refuses_settings_that_differ_from_the_pipeline(pipeline, args, hint):
    out, _ = pipeline
    before = snapshot(out)
    if hint is None:  # not an option at all: a usage error
        assert_one_line_error(run("--resume", out, *args), 2, args[0])
    else:
        one_line_error(run("--resume", out, *args), "--resume refuses", hint)
    assert snapshot(out) == before


def test_resume_of_a_damaged_record_or_of_nothing_is_one_line(tmp_path):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "stages.json").write_text('{"format": "compressor.run-stages/1", "settings": {}, '
                                         '"stages": {"prune": {"command": "x", "files": {"../../etc/passwd": "0"}}}}')
    before = snapshot(tmp_path)
    one_line_error(run("--resume", damaged), "stages.json", "not a `compress run` record")
    one_line_error(run("--resume", tmp_path / "nothing"), "nothing to resume")
    assert snapshot(tmp_path) == before


def test_run_is_listed_and_explains_every_option():
    text = hostile.invoke("run", "--help").output
    for option in ("--int8", "--calib-samples", "--export-format", "--bench-backend", "--bench-batch-size",
                   "--bench-precision", "--min-runs", "--resume", "--flops-reduction"):
        assert option in text, option
    assert "\nExport and eval:\n" in text and "\nBench:\n" in text and "Other options" not in text
