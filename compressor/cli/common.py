"""What every ``compress`` command shares: one-line user errors, the C,H,W option parser, the
bounded number types every option uses, and the --trust-code flag.  Light on purpose (click
only): ``compress --help`` imports it."""
from __future__ import annotations

import functools
import math
import re

import click

from compressor.errors import CompressorError


def user_errors(command):
    """Print CompressorError as a one-line error instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CompressorError as error:
            raise click.ClickException(str(error)) from error

    return wrapper


# The largest count any option takes (epochs, batches, runs, images, threads): past it torch's
# int32 kernels and numpy's default ints overflow deep inside a run, long after the option was
# accepted.  No sane run comes near it; options with a tighter sensible limit name their own.
MAX_COUNT = 2**31 - 1


def bounded_int(min: int, max: int = MAX_COUNT) -> click.IntRange:
    """An integer option's type: click's IntRange always with an upper bound, which its
    message states ("... is not in the range 1<=x<=2147483647")."""
    return click.IntRange(min, max)


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


def parse_input_size(ctx, param, value: str | None) -> tuple[int, int, int] | None:
    if value is None:
        return None
    parts = [p for p in re.split(r"[,x×\s]+", value.strip()) if p]
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(f"expected three positive integers C,H,W (e.g. 3,224,224), got '{value}'")
    return tuple(int(p) for p in parts)


def trust_code_flag(extra_help: str = ""):
    """The --trust-code flag (``compressor.trust``), with what it also covers in this command."""
    from compressor.trust import trust_code_option

    return trust_code_option(extra_help)
