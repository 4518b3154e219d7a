"""The command line as people expect it: -v/-q on either side of the command, a start line
before the long commands work (and none before a refusal), option headings in --help with
every option listed once, an aligned ``compress models`` table, one --input-size spelling
(the old --image-size still working, with a warning), bars only on a terminal, and shell
completion from the installed console script."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from compressor.cli import main
from compressor.cli.sections import HEADINGS, OTHER, SectionedCommand
from tests.hostile import TINY, assert_one_line_error, invoke, one_line_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EPOCH_LINE = re.compile(r"^epoch \d+/2  loss ", re.MULTILINE)
DEBUG_LINE = re.compile(r"^epoch \d+: wrote .*checkpoint", re.MULTILINE)
DEPRECATED = "--image-size is deprecated"


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory) -> tuple[Path, click.testing.Result]:
    """A tiny run with -q after the command's name."""
    out = tmp_path_factory.mktemp("quiet") / "run"
    result = CliRunner().invoke(main, ["prune", *TINY, "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return out, result


# -- -v / -q on either side of the command ----------------------------------------------------


def test_quiet_after_the_command_hides_the_start_and_epoch_lines(quiet_run):
    _, result = quiet_run
    assert "compress prune:" not in result.output and not EPOCH_LINE.search(result.output), result.output
    assert "done: resnet20" in result.stdout


def test_verbose_after_the_command_shows_the_start_line_and_the_debug_lines(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["prune", *TINY, "--out", str(out), "--verbose"])
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first == f"compress prune: resnet20 on synthetic (64 train / 32 val), cpu, 2 epochs of ocs, -50% MACs -> {out}"
    assert len(EPOCH_LINE.findall(result.stdout)) == 2 and len(DEBUG_LINE.findall(result.stderr)) >= 2, result.output


@pytest.mark.parametrize("args", [["-v", "models", "-q"], ["models", "-q", "--verbose"], ["-q", "-v", "models"]])
def test_verbose_and_quiet_contradict_wherever_they_are(args):
    result = invoke(*args)
    assert_one_line_error(result, 2, "contradict")


@pytest.mark.parametrize("args", [["-q", "models", "-q"], ["models", "-v"], ["-v", "models"]])
def test_the_same_flag_twice_or_on_either_side_is_fine(args):
    import logging

    logger = logging.getLogger("compressor")
    before = logger.handlers[:], logger.level, logger.propagate
    result = invoke(*args)
    assert result.exit_code == 0 and "resnet20" in result.stdout, result.output
    assert (logger.handlers, logger.level, logger.propagate) == before


def test_eval_says_what_it_evaluates_unless_quiet(quiet_run):
    run, _ = quiet_run
    shown = invoke("eval", run)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[0] == f"compress eval: 1 model(s) of {run} on 32 val images of synthetic, batch 32"
    for args in (["-q", "eval", run], ["eval", run, "-q"]):
        quiet = invoke(*args)
        assert quiet.exit_code == 0 and "compress eval:" not in quiet.output, quiet.output


# -- no start line before a refusal ------------------------------------------------------------


def test_a_refused_prune_is_one_line_without_a_start_line(tmp_path):
    one_line_error(invoke("prune", *TINY, "--model", "resnt20", "--out", tmp_path / "a"), "resnt20")
    one_line_error(invoke("prune", *TINY, "--batch-size", "100", "--out", tmp_path / "b"), "--batch-size")


# -- --help: headings, every option once ------------------------------------------------------


def option_rows(text: str) -> list[str]:
    """The option column of each option row under the headings (the docstring above them is
    indented alike): click indents a row 2 spaces, its wrapped help further."""
    sections = text[re.search(r"^\w[\w ()]*:$", text, re.MULTILINE).start():]
    return [line[2:].split("  ")[0].strip() for line in sections.splitlines() if re.match(r"^  -", line)]


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_option_is_listed_exactly_once(name):
    command = main.commands[name]
    text = invoke(name, "--help").output
    rows = option_rows(text)
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        listed = [row for row in rows if param.opts[0] in re.split(r"[ ,/]+", row)]
        assert len(listed) == 1, (param.opts, listed)
    visible = [p for p in command.params if isinstance(p, click.Option) and not p.hidden]
    assert len(rows) == len(visible) + 1, rows  # and --help


def test_headings_name_only_options_that_exist():
    for name, headings in HEADINGS.items():
        known = {p.name for p in main.commands[name].params} | {"help"}
        named = [option for names in headings.values() for option in names]
        assert set(named) <= known, set(named) - known
        assert len(named) == len(set(named)), name  # one heading per option


def test_the_long_commands_show_headings_and_nothing_is_left_unsorted():
    for name in ("prune", "export", "eval", "bench", "info"):
        text = invoke(name, "--help").output
        for heading in HEADINGS[name]:
            assert f"\n{heading}:\n" in text, (name, heading)
        assert OTHER not in text, name  # every option of today has its heading
        assert "\nOptions:\n" not in text


def test_an_option_no_heading_names_is_still_listed():
    command = SectionedCommand("prune", params=[click.Option(["--brand-new"], help="An option added later.")])
    text = CliRunner().invoke(command, ["--help"]).output
    assert f"\n{OTHER}:\n" in text and "--brand-new" in text


def test_model_help_names_every_kind_of_model():
    text = invoke("prune", "--help").output
    assert "timm:NAME" in text and "module.path:factory" in text


# -- compress models ---------------------------------------------------------------------------


def test_models_table_has_a_header_and_aligned_columns():
    lines = invoke("models").stdout.splitlines()
    assert lines[0].split() == ["model", "family", "input"]
    family, size = lines[0].index("family"), lines[0].index("input")
    for line in lines[1:]:
        name, kind, shape = line.split()
        assert line.index(kind, len(name)) == family and line.rindex(shape) == size, line
        assert re.fullmatch(r"\d+x\d+x\d+", shape), line


# -- one --input-size ------------------------------------------------------------------------


def test_input_size_takes_n_for_a_square_rgb_input_in_info():
    square = invoke("info", "resnet20", "--input-size", "16", "--json")
    assert square.exit_code == 0, square.output
    assert json.loads(square.stdout)["input_size"] == [3, 16, 16]


@pytest.mark.parametrize("spelling", ["--input-size", "--image-size"])
def test_prune_takes_input_size_and_still_the_old_image_size(tmp_path, spelling):
    """The value reaches the data settings under either name: digits refuses any size but 32."""
    result = invoke("prune", "--dataset", "digits", spelling, "16", "--out", tmp_path / "x")
    assert result.exit_code == 1 and result.stdout == "", result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: digits images are 32x32; drop --input-size"], result.stderr
    warned = [line for line in result.stderr.splitlines() if line not in errors]
    assert warned == ([f"{DEPRECATED} and will be removed; use --input-size (same values)"]
                      if spelling == "--image-size" else []), result.stderr
    assert not (tmp_path / "x").exists()


def test_a_config_file_takes_input_size_too(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("input-size: 16\n")
    result = invoke("prune", "--config", config, "--dataset", "digits", "--out", tmp_path / "x")
    assert_one_line_error(result, 1, "drop --input-size")


@pytest.mark.parametrize("args, hint", [(["--image-size", "16", "--input-size", "16"], "old name of --input-size"),
                                        (["--input-size", "1,32,32"], "square RGB"),
                                        (["--input-size", "3,32,16"], "square RGB"),
                                        (["--input-size", "4"], "8<=x")])
def test_prune_input_size_refusals_are_usage_errors(tmp_path, args, hint):
    assert_one_line_error(invoke("prune", *args, "--out", tmp_path / "x"), 2, hint)


def test_the_old_spelling_is_hidden_but_the_help_names_it():
    text = invoke("prune", "--help").output
    assert not any("--image-size" in row for row in option_rows(text))
    assert "Formerly --image-size, still accepted (deprecated)" in " ".join(re.sub(r"-\n\s+", "-", text).split())


# -- progress bars only on a terminal ----------------------------------------------------------


def test_the_progress_bar_is_off_when_stderr_is_not_a_terminal(capsys):
    from compressor.progress import progress_bar

    assert not sys.stderr.isatty()
    bar = progress_bar(3, "x")
    bar.update(3)
    bar.close()
    assert bar.disable and capsys.readouterr().err == ""


# -- shell completion ---------------------------------------------------------------------------

SCRIPT = Path(sys.executable).parent / "compress"


@pytest.mark.skipif(not SCRIPT.is_file(), reason="the console script is not installed beside this interpreter")
@pytest.mark.parametrize("shell, marker", [("bash", "complete -o nosort -F _compress_completion compress"),
                                           ("zsh", "#compdef compress"), ("fish", "complete --no-files --command compress")])
def test_the_console_script_prints_a_completion_script(tmp_path, shell, marker):
    done = subprocess.run([str(SCRIPT)], env={**os.environ, "_COMPRESS_COMPLETE": f"{shell}_source"}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and marker in done.stdout, done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not SCRIPT.is_file(), reason="the console script is not installed beside this interpreter")
@pytest.mark.parametrize("line, offered", [("compress pr", ["plain,prune"]),
                                           ("compress prune --inp", ["plain,--input-size"]),
                                           ("compress prune --ima", []),  # the old spelling is not offered
                                           ("compress prune --image-size 16 --sch", ["plain,--schedule"])])
def test_completion_offers_the_new_spelling_and_never_warns(tmp_path, line, offered):
    env = {**os.environ, "_COMPRESS_COMPLETE": "bash_complete", "COMP_WORDS": line,
           "COMP_CWORD": str(len(line.split()) - 1)}
    done = subprocess.run([str(SCRIPT)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == offered, done.stdout + done.stderr
    assert done.stderr == ""
