"""The ``compress`` command line: the group, and one module per command beside it
(``info``, ``models``, ``prune``, ``export``, ``eval``, ``bench``, and ``run``: all of them in turn).

User mistakes (unknown model, bad sizes, unreachable targets, unreadable files)
end with one line on stderr and exit code 1 (2 for malformed options), never a
traceback.

torch, the engine, the exporters and the benchmarks are imported inside the command
bodies: ``compress --help`` and ``compress COMMAND --help`` then start in a fraction of
a second instead of several (``benchmarks/cli_startup.py`` measures it,
``tests/unit/test_cli_lazy_imports.py`` holds it).

The library logs instead of printing; ``compressor.cli.logs`` shows those lines on the
console at the level ``-v`` / ``-q`` choose (default INFO).
"""
from __future__ import annotations

import click

from compressor import __version__
from compressor.cli.bench import bench_command
from compressor.cli.common import ENV_PREFIX
from compressor.cli.evaluate import eval_command
from compressor.cli.export import export_command
from compressor.cli.info import info_command
from compressor.cli.logs import chosen_level, show_logs, verbosity_options
from compressor.cli.models import models_command
from compressor.cli.prune import prune_command
from compressor.cli.run import run_command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100,
                                "auto_envvar_prefix": ENV_PREFIX})
@click.version_option(__version__, prog_name="compress")
@verbosity_options
@click.pass_context
def main(ctx: click.Context) -> None:
    """One-cycle structured pruning: find the channels that do not pay for themselves,
    remove them, and hand back a smaller dense network.

    -v/-q may also follow the command: `compress prune -q ...`.

    \b
    Every option may also be set in the environment as COMPRESS_<COMMAND>_<OPTION>
    (COMPRESS_PRUNE_EPOCHS=1 is `compress prune --epochs 1`); a flag on the line wins."""
    show_logs(ctx, chosen_level(ctx))


for _command in (models_command, info_command, prune_command, export_command, eval_command, bench_command,
                 run_command):
    main.add_command(_command)

if __name__ == "__main__":
    main()
