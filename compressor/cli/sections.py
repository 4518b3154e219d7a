"""Option headings in ``compress COMMAND --help``: one table of which option goes under which
heading, read by ``SectionedCommand``.  The option declarations stay where they are (one flat
list per command); an option the table does not name is listed under "Other options", so an
option added later is never missing from the help, only unsorted until it is named here."""
from __future__ import annotations

import click

OTHER = "Other options"
RUN_CONTROL = "Run control"
# Every command's own -v/-q and --help (compressor.cli.logs.verbosity_options, click's --help).
_CONSOLE = ("verbose", "quiet", "help")

# compress prune's headings (compress run shows them too)
_PRUNE: dict[str, tuple[str, ...]] = {
    "Model and data": ("model", "weights", "num_classes", "dataset", "data_dir", "download", "batch_size",
                       "workers", "image_size", "synthetic_train", "synthetic_val", "augment"),
    "Training": ("epochs", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "lr_schedule",
                 "milestones", "gamma", "label_smoothing", "amp", "channels_last", "compile_", "device", "seed",
                 "refresh_bn", "recalibrate_bn"),
    "Pruning schedule": ("flops_reduction", "speedup", "schedule", "criterion", "cost_weighting", "indicator",
                         "monitor_start", "stability_threshold", "epi_threshold", "epi_window", "max_prune_epoch",
                         "prune_epoch", "max_prune_fraction", "min_width", "ignore", "reset_optimizer"),
    "Shrink (ocs)": ("reg_start", "reg_schedule", "reg_target", "reg_lambda", "reg_delta", "reg_interval"),
    "LAASP": ("criteria_pool", "selection_samples", "laasp_step", "laasp_group_fraction", "laasp_shortlist",
              "recover_macs", "recover_epochs"),
    "Deployment": ("round_to", "deploy_backend", "deploy_device", "deploy_precision", "deploy_batch",
                   "deploy_threads", "latency_table"),
    RUN_CONTROL: ("config", "out", "resume", "overwrite", "trust_code", "progress", *_CONSOLE),
}
_TIMING = ("warmup_s", "warmup_runs", "min_runs", "min_time_s", "rounds")

# command -> heading -> parameter names (click's ``param.name``), headings in the order shown.
HEADINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "prune": _PRUNE,
    # compress run: prune's options under prune's headings, then the later stages'
    "run": {
        **{heading: names for heading, names in _PRUNE.items() if heading != RUN_CONTROL},
        "Export and eval": ("export_format", "int8", "calib_samples"),
        "Bench": ("bench_backends", "bench_batch_sizes", "bench_precisions", "threads", *_TIMING),
        RUN_CONTROL: _PRUNE[RUN_CONTROL],
    },
    "export": {
        "Source and output": ("out", "input_size", "overwrite", "trust_code"),
        "Format": ("format_", "opset", "max_batch", "fp16", "simplify", "allow_trace"),
        "Parity gate": ("atol", "rtol", "no_verify"),
        "INT8": ("int8", "calib_data", "calib_data_dir", "calib_samples", "calib_method", "int8_min_agreement",
                 "int8_exclude", "int8_activations", "int8_fallback"),
        RUN_CONTROL: _CONSOLE,
    },
    "eval": {
        "Data": ("data", "data_dir", "split", "limit", "batch_size"),
        "Report": ("json_path", "overwrite"),
        RUN_CONTROL: ("trust_code", *_CONSOLE),
    },
    "bench": {
        "What to time": ("backends", "device", "batch_sizes", "precisions", "threads"),
        "Timing": _TIMING,
        "Reports": ("out", "json_path", "markdown_path", "plot_path", "overwrite"),
        RUN_CONTROL: ("trust_code", *_CONSOLE),
    },
    "info": {
        "Model": ("input_size", "num_classes", "trust_code"),
        "Pruning plan": ("flops_reduction", "speedup", "round_to", "max_prune_fraction", "min_width", "ignore"),
        "Deployment (--speedup)": ("deploy_backend", "deploy_device", "deploy_precision", "deploy_batch",
                                   "deploy_threads", "latency_table"),
        "Output": ("show_groups", "as_json", *_CONSOLE),
    },
}


def heading_of(command: str) -> dict[str, str]:
    """Parameter name -> its heading, for ``command`` (empty: no headings)."""
    return {name: heading for heading, names in HEADINGS.get(command, {}).items() for name in names}


class SectionedCommand(click.Command):
    """A command whose --help lists its options under the headings of ``HEADINGS``."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if self.name not in HEADINGS:
            super().format_options(ctx, formatter)
            return
        where = heading_of(self.name)
        help_option = self.get_help_option(ctx)  # its param name differs between click versions
        rows: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record is not None:  # None: a hidden option
                name = "help" if param is help_option else param.name
                rows.setdefault(where.get(name, OTHER), []).append(record)
        # One first column for every heading, as click's single list has: pad the names that fit.
        width = min(max(len(term) for group in rows.values() for term, _ in group), COLUMN)
        for heading in [*HEADINGS[self.name], OTHER]:
            if rows.get(heading):
                with formatter.section(heading):
                    formatter.write_dl([(term.ljust(width), text) for term, text in rows[heading]], col_max=COLUMN)


COLUMN = 30  # click's widest first column (``HelpFormatter.write_dl``'s col_max)
