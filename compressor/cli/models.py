"""``compress models``: the architectures the zoo can build, with their native input sizes."""
from __future__ import annotations

import json

import click

from compressor.cli.common import user_errors
from compressor.cli.logs import verbosity_options
from compressor.errors import CompressorError


@click.command("models")
@click.option(
    "--family",
    type=click.Choice(["all", "cifar", "torchvision", "torchvision-detection", "torchvision-segmentation", "timm"]),
    default="all",
    show_default=True,
    help="Only list the zoo's CIFAR models, torchvision's classifiers, its detectors (their example input is a "
    "list of images) or segmenters, or timm's models (timm: needs the timm extra; 'all' leaves timm's ~1300 "
    "names out).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@verbosity_options
@user_errors
def models_command(family: str, as_json: bool) -> None:
    """List the model names that --model / MODEL accept.  Besides these: timm:NAME for any
    timm model, and module.path:factory for a function of yours that returns an nn.Module."""
    from compressor.models.zoo import entry
    from compressor.models import list_models

    rows = []
    if family == "timm":
        from compressor.models.timm_models import PREFIX, TimmError, architectures, native_input_size

        try:
            names = architectures()
        except TimmError as error:  # timm is an optional extra: say which, in one line
            raise CompressorError(str(error)) from error
        for arch in names:
            rows.append({"name": PREFIX + arch, "family": "timm", "input_size": list(native_input_size(arch))})
    for name in list_models() if family != "timm" else []:
        info = entry(name)
        if family in ("all", info.family):
            rows.append({"name": name, "family": info.family, "input_size": list(info.input_size)})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    table = [("model", "family", "input")] + [
        (row["name"], row["family"], "x".join(str(v) for v in row["input_size"])) for row in rows]
    widths = [max(len(cells[i]) for cells in table) for i in range(2)]  # the last column needs no padding
    for name, kind, size in table:
        click.echo(f"{name:<{widths[0]}}  {kind:<{widths[1]}}  {size}")
