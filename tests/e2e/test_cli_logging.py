"""What ``compress`` shows of the library's log lines at each level.

The library logs (``compressor.*`` loggers) and never prints; the CLI puts the lines on
the console: per-epoch and prune lines (INFO) on stdout by default, none with ``-q``,
and ``-v`` adds the DEBUG lines (the checkpoint each epoch wrote) on stderr.  Each
level is one real tiny ``compress prune`` in-process.
"""
from __future__ import annotations

import logging
import re

import click
import pytest
from click.testing import CliRunner

from compressor.cli import main
from compressor.cli.logs import show_logs
from tests.hostile import TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EPOCH_LINE = re.compile(r"^epoch \d+/2  loss ", re.MULTILINE)
PRUNE_LINE = re.compile(r"^pruned after epoch 1: ", re.MULTILINE)
DEBUG_LINE = re.compile(r"^epoch \d+: wrote .*checkpoint", re.MULTILINE)


def prune(tmp_path, *group_options: str):
    result = CliRunner().invoke(main, [*group_options, "prune", *TINY, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "done: resnet20" in result.stdout  # the command's own result shows at every level
    return result


def test_default_shows_one_line_per_epoch_on_stdout_and_no_debug(tmp_path):
    result = prune(tmp_path)
    assert len(EPOCH_LINE.findall(result.stdout)) == 2, result.output
    assert PRUNE_LINE.search(result.stdout), result.output
    assert not DEBUG_LINE.search(result.output), result.output


def test_quiet_shows_no_per_epoch_lines(tmp_path):
    result = prune(tmp_path, "-q")
    assert not EPOCH_LINE.search(result.output) and not PRUNE_LINE.search(result.output), result.output


def test_verbose_adds_the_debug_lines_on_stderr(tmp_path):
    result = prune(tmp_path, "--verbose")
    assert len(EPOCH_LINE.findall(result.stdout)) == 2, result.output
    assert len(DEBUG_LINE.findall(result.stderr)) >= 2, result.output
    assert not DEBUG_LINE.search(result.stdout), result.output


def test_verbose_and_quiet_together_are_a_usage_error():
    result = CliRunner().invoke(main, ["-v", "-q", "models"])
    assert result.exit_code == 2 and "contradict" in result.output, result.output


def test_a_command_leaves_the_compressor_logger_as_it_found_it():
    logger = logging.getLogger("compressor")
    before = logger.handlers[:], logger.level, logger.propagate
    assert CliRunner().invoke(main, ["-v", "models"]).exit_code == 0
    assert (logger.handlers, logger.level, logger.propagate) == before


@pytest.mark.parametrize("level, shown", [(logging.DEBUG, "DIWE"), (logging.INFO, "IWE"), (logging.WARNING, "WE")])
def test_the_console_handler_routes_info_to_stdout_and_the_rest_to_stderr(capsys, monkeypatch, level, shown):
    # With no handler at all Python prints warnings through logging.lastResort, and whether
    # one is installed depends on the test runner (pytest's logging plugin): a NullHandler
    # takes that fallback out of play, so only the console handler can print.
    logger = logging.getLogger("compressor.some.module")
    monkeypatch.setattr(logger, "handlers", [*logger.handlers, logging.NullHandler()])  # restored afterwards
    with click.Context(main) as ctx:
        show_logs(ctx, level)
        logger.debug("D line")
        logger.info("I line")
        logger.warning("W line")
        logger.error("E line")
    logger.warning("after close")  # the context closed: the console handler is gone
    out, err = capsys.readouterr()
    assert out == ("I line\n" if "I" in shown else "")
    assert err == "".join(f"{tag} line\n" for tag in "DWE" if tag in shown)
