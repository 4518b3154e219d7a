"""How ``compress`` shows what the library logs.

Library code never prints: it logs through ``logging.getLogger(__name__)``, so every
message is under the ``compressor`` logger.  Used as a library, nothing is set up
here: Python's own fallback (``logging.lastResort``) shows warnings and errors on
stderr, one plain line each, and info and debug lines stay silent until the caller
configures logging.

The command line owns its console, so for the length of one command it puts one
handler on the ``compressor`` logger that writes each message's text alone, where
the CLI printed it before it logged: info lines (the per-epoch lines of ``compress
prune``) on stdout, warnings, errors and debug lines on stderr.  ``-v`` lowers the
level to DEBUG, ``-q`` raises it to WARNING; errors that end a command are not log
records and stay one ``Error:`` line whatever the level.  ``-v``/``-q`` are taken before
the command's name and after it alike (``verbosity_options`` gives the group and every
command the same two flags).  When the command ends the
logger is put back as it was, so an in-process call (``CliRunner``, a test) leaves
no handler behind.
"""
from __future__ import annotations

import logging

import click

LOGGER = "compressor"
# ctx.meta is one dict shared by the group's context and its command's: the flags given in
# either place meet here, so `compress -v prune -q` is refused like `compress -v -q prune`.
CHOSEN = "compressor.cli.verbosity"
SHOWN = "compressor.cli.console"  # set while show_logs' handler is on the logger
LEVELS = {"verbose": logging.DEBUG, "quiet": logging.WARNING}


class ConsoleHandler(logging.Handler):
    """The message text alone; INFO on stdout, every other level on stderr.

    ``click.echo`` looks the streams up at each line (so a test runner's swapped
    ``sys.stdout`` is honoured) and flushes, as ``print(..., flush=True)`` did."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=not logging.INFO <= record.levelno < logging.WARNING)
        except Exception:  # noqa: BLE001 - logging's contract: a failing handler never raises
            self.handleError(record)


def show_logs(ctx: click.Context, level: int) -> ConsoleHandler:
    """Route ``compressor``'s records at ``level`` and above to the console until ``ctx``
    closes.  The records do not also propagate to the root logger: a dependency that
    configured root logging must not print every line twice."""
    logger = logging.getLogger(LOGGER)
    saved = logger.level, logger.propagate
    handler = ConsoleHandler()
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    ctx.meta[SHOWN] = True

    def restore() -> None:
        ctx.meta.pop(SHOWN, None)
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]

    ctx.call_on_close(restore)
    return handler


def chosen_level(ctx: click.Context) -> int:
    """The level -v/-q chose anywhere on the command line so far (default INFO)."""
    chosen = ctx.meta.get(CHOSEN, set())
    return LEVELS[next(iter(chosen))] if chosen else logging.INFO


def _note_verbosity(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value:
        return
    chosen = ctx.meta.setdefault(CHOSEN, set())
    chosen.add(param.name)
    if len(chosen) > 1:
        raise click.UsageError("-v/--verbose and -q/--quiet contradict each other; pass one of them", ctx)
    if ctx.meta.get(SHOWN):  # a command's own flag: the group has already set the level, and restores it
        logging.getLogger(LOGGER).setLevel(chosen_level(ctx))


def verbosity_options(command):
    """-v/--verbose and -q/--quiet, for the group and for each command, so that either place
    on the command line works; not passed on to the function (``chosen_level`` reads them)."""
    flags = [
        click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_note_verbosity,
                     help="Also show debug lines (e.g. which checkpoint each epoch wrote, fallbacks taken)."),
        click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_note_verbosity,
                     help="Show no progress lines (the start line, per epoch, prune), only warnings; results and "
                     "errors still show."),
    ]
    for flag in reversed(flags):
        command = flag(command)
    return command
