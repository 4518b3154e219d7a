"""Rows the schedule benchmark saved before epochs were numbered from 1 read in today's numbering."""
from benchmarks.prune_shock import numbered_from_one, table

SHOCK = {"top1_before": 96.0, "top1_after": 95.0}


def _row(**extra) -> dict:
    return {"model": "resnet20", "variant": "ocs", "reduction": 0.5, "seed": 0, "top1": 99.0, "best_top1": 99.3,
            "macs_reduction": 0.5, "wall_time_s": 10.0, "shock_pp": 1.0, "val_curve": [50.0, 90.0],
            "lr_curve": [0.1, 0.1], "shrinking": [False, False], **extra}


def test_a_row_from_before_counts_its_prune_from_one_now():
    old = _row(prune_epoch=33, shocks=[{**SHOCK, "epoch": 33}])
    new = numbered_from_one(old)
    assert new["prune_epoch"] == 34 and new["shocks"][0]["epoch"] == 34 and new["epochs_from"] == 1
    assert old["prune_epoch"] == 33  # the saved row is not edited in place
    assert numbered_from_one(new) == new  # a row in today's numbering stays as it is


def test_the_table_prints_the_prune_epoch_as_saved_in_todays_numbering():
    row = _row(prune_epoch=34, shocks=[{**SHOCK, "epoch": 34}], epochs_from=1)
    line = next(line for line in table([row]).splitlines() if line.startswith("| resnet20"))
    assert "| 34 |" in line and "| 33 |" not in line


def test_a_sweep_runs_a_rows_seeds_together_and_skips_runs_already_saved():
    from argparse import Namespace

    from benchmarks.prune_shock import _todo

    args = Namespace(models=["resnet56"], reductions=[0.5, 0.8], variants=["dense", "ocs", "epi"], seeds=[0, 1])
    todo = _todo(args, done={("resnet56", "ocs", 0.5, 1)})
    assert todo == [("resnet56", "dense", 0.5, 0), ("resnet56", "dense", 0.5, 1), ("resnet56", "ocs", 0.5, 0),
                    ("resnet56", "epi", 0.5, 0), ("resnet56", "epi", 0.5, 1),
                    ("resnet56", "ocs", 0.8, 0), ("resnet56", "ocs", 0.8, 1),
                    ("resnet56", "epi", 0.8, 0), ("resnet56", "epi", 0.8, 1)]
