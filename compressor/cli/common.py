"""What every ``compress`` command shares: one-line user errors, the --input-size parser, an
option's old spelling kept as a deprecated alias, the bounded number types every option uses,
a choice over a registry's live names, and the --trust-code flag.  Light on purpose (click only): ``compress --help`` imports it."""
from __future__ import annotations

import functools
import logging
import math
import re
from typing import Callable, Iterable

import click

from compressor.errors import CompressorError


def user_errors(command):
    """The one place a command's user error becomes the CLI's ``Error: ...`` line and exit 1:
    every ``compress`` command's function is wrapped in it (``tests/unit/test_one_line.py``
    checks), so none catches ``CompressorError`` on its own.  Click's usage errors (exit 2)
    and ``click.ClickException`` pass through unchanged."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CompressorError as error:
            raise click.ClickException(str(error)) from error

    wrapper.user_errors = True  # what the test looks for
    return wrapper


# Every option can also come from the environment, COMPRESS_<COMMAND>_<OPTION> (the group's
# auto_envvar_prefix): `COMPRESS_PRUNE_EPOCHS=1 compress prune` is `compress prune --epochs 1`.
# The prefix is written once here; the group's help names it.
ENV_PREFIX = "COMPRESS"
# What the user said for this command, on the line or in that variable (a --config file's
# values arrive as DEFAULT_MAP: defaults read from a file, not the user's word).
USER_SOURCES = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)


def user_said(ctx: click.Context, name: str) -> bool:
    """Whether option ``name`` was typed or set through its COMPRESS_* variable."""
    return ctx.get_parameter_source(name) in USER_SOURCES


# The largest count any option takes (epochs, batches, runs, images, threads): past it torch's
# int32 kernels and numpy's default ints overflow deep inside a run, long after the option was
# accepted.  No sane run comes near it; options with a tighter sensible limit name their own.
MAX_COUNT = 2**31 - 1


def bounded_int(min: int, max: int = MAX_COUNT) -> click.IntRange:
    """An integer option's type: click's IntRange always with an upper bound, which its
    message states ("... is not in the range 1<=x<=2147483647")."""
    return click.IntRange(min, max)


class LiveChoice(click.Choice):
    """click's Choice over names read each time the option is parsed, completed or shown in
    help, not once when the command is defined: a registry that user code extends
    (``register_schedule``) offers its new names too."""

    def __init__(self, names: Callable[[], Iterable[str]], case_sensitive: bool = True):
        self._names = names
        self.case_sensitive = case_sensitive

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self._names())


class FiniteFloat(click.FloatRange):
    """click's FloatRange that refuses NaN and infinities first: NaN passes every range
    comparison (it is neither below a minimum nor above a maximum) and inf passes an open
    range, so without this ``--lr nan`` reached the run and ``--min-time-s inf`` timed forever."""

    name = "finite float"

    def convert(self, value, param, ctx):
        number = click.types.FloatParamType.convert(self, value, param, ctx)
        if not math.isfinite(number):
            bound = self._describe_range()
            self.fail(f"must be finite{f' and in {bound}' if bound else ''}, got {value!r}", param, ctx)
        return super().convert(number, param, ctx)

    def _describe_range(self) -> str:
        return "" if self.min is None and self.max is None else super()._describe_range()


def finite_float(min: float | None = None, max: float | None = None, min_open: bool = False,
                 max_open: bool = False) -> FiniteFloat:
    """A float option's type: finite, and within the bounds given (stated in the message)."""
    return FiniteFloat(min, max, min_open, max_open)


def bounded_number(text, what: str, low: int, high: int) -> int:
    """An integer in [low, high] from the text of an option that also takes the word 'auto'
    (--round-to, --reg-start), refused in ``bounded_int``'s words."""
    try:
        number = int(text)
    except (TypeError, ValueError):
        raise click.BadParameter(f"expected {what} or 'auto', got '{text}'") from None
    if not low <= number <= high:
        raise click.BadParameter(f"{number} is not in the range {low}<=x<={high}")
    return number


# The help's words for --input-size, one spelling for every command that takes it.
INPUT_SIZE_FORMS = "C,H,W, or N for 3,N,N"
# The smallest crop prune takes (what --image-size took before it was renamed).
MIN_CROP = 8


def parse_input_size(ctx, param, value: str | None) -> tuple[int, int, int] | None:
    """--input-size: C,H,W (also CxHxW), or one N for a square RGB input 3,N,N."""
    if value is None:
        return None
    parts = [p for p in re.split(r"[,x×\s]+", str(value).strip()) if p]
    if len(parts) == 1 and parts[0].isdigit() and int(parts[0]) > 0:
        parts = ["3", parts[0], parts[0]]
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(f"expected three positive integers C,H,W (e.g. 3,224,224) or one N for 3,N,N, "
                                 f"got '{value}'")
    return tuple(int(p) for p in parts)


def parse_square_input_size(ctx, param, value) -> int | None:
    """prune's --input-size: the side N of the square RGB crop the model sees (N or 3,N,N)."""
    size = parse_input_size(ctx, param, value)
    if size is None:
        return None
    channels, height, width = size
    if channels != 3 or height != width:
        raise click.BadParameter(f"the images are square RGB crops: give N or 3,N,N, got '{value}'")
    if not MIN_CROP <= height <= MAX_COUNT:
        raise click.BadParameter(f"{height} is not in the range {MIN_CROP}<=x<={MAX_COUNT}")
    return height


class RenamedOption(click.Option):
    """An option that had another name: the old spelling (``old=``) still works, with a
    one-line deprecation warning, but is not listed in --help (the new option's help text
    names it).  Given together with the new spelling it is a usage error."""

    def __init__(self, *args, old: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.old = old

    @property
    def _old_dest(self) -> str:
        return f"{self.name}__as_{self.old.lstrip('-').replace('-', '_')}"

    def add_to_parser(self, parser, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        parser.add_option(obj=self, opts=[self.old], dest=self._old_dest, action="store", nargs=self.nargs)

    def consume_value(self, ctx: click.Context, opts):
        if self._old_dest not in opts:
            return super().consume_value(ctx, opts)
        new = self.opts[0]
        if self.name in opts:
            raise click.UsageError(f"{self.old} is the old name of {new}; give {new} alone", ctx)
        if not ctx.resilient_parsing:  # shell completion parses the line too: no warning there
            logging.getLogger(__name__).warning("%s is deprecated and will be removed; use %s (same values)",
                                                self.old, new)
        return opts[self._old_dest], click.core.ParameterSource.COMMANDLINE


def stacked(options):
    """One decorator that applies click option decorators in the order listed (as --help shows them)."""
    options = list(options)

    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def trust_code_flag(extra_help: str = ""):
    """The --trust-code flag (``compressor.trust``), with what it also covers in this command."""
    from compressor.trust import trust_code_option

    return trust_code_option(extra_help)
