"""Every ``compress`` option can come from the environment as COMPRESS_<COMMAND>_<OPTION>
(the group's auto_envvar_prefix): the README's examples run at test size that way
(tests/e2e/test_readme_blocks.py), and a user may set defaults for a shell session.
A variable is the user's word like a typed flag (a --config file's values are not), a flag
on the line wins over it, and its value is checked like the flag's; but a variable naming
Python code to import is data, as a --config file's is, until --trust-code."""
from __future__ import annotations

import json

from click.testing import CliRunner

from compressor.cli import main


def invoke(args: list[str], **env: str):
    return CliRunner().invoke(main, args, env=env)


def names(result) -> set[str]:
    assert result.exit_code == 0, result.output
    return {model["name"] for model in json.loads(result.stdout)}


def test_a_variable_sets_its_option_and_a_flag_wins():
    cifar = names(invoke(["models", "--json"], COMPRESS_MODELS_FAMILY="cifar"))
    assert "resnet20" in cifar and "resnet18" not in cifar
    typed = names(invoke(["models", "--json", "--family", "torchvision"], COMPRESS_MODELS_FAMILY="cifar"))
    assert "resnet18" in typed and "resnet20" not in typed


def test_a_variable_is_checked_like_its_flag(tmp_path):
    out = tmp_path / "never"
    bad = invoke(["prune", "--out", str(out)], COMPRESS_PRUNE_EPOCHS="0")
    assert bad.exit_code == 2 and "--epochs" in bad.stderr and "0 is not in the range" in bad.stderr
    # As a typed --synthetic-train would be: refused with the digits it would not size.
    unused = invoke(["prune", "--out", str(out)], COMPRESS_PRUNE_SYNTHETIC_TRAIN="64")
    assert unused.exit_code == 1 and "--synthetic-train" in unused.stderr and "Traceback" not in unused.output
    assert not out.exists()


def test_the_help_says_so():
    text = invoke(["--help"]).stdout
    assert "COMPRESS_<COMMAND>_<OPTION>" in text and "COMPRESS_PRUNE_EPOCHS=1" in text


def test_a_model_factory_from_the_environment_needs_trust_code(tmp_path):
    """COMPRESS_PRUNE_MODEL=module:factory may have been set by a profile long ago: refused
    in one line naming the variable, before anything is imported or written."""
    import sys

    out = tmp_path / "never"
    refused = invoke(["prune", "--out", str(out)], COMPRESS_PRUNE_MODEL="planted_module_xyz:build")
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    [line] = refused.stderr.splitlines()
    assert "COMPRESS_PRUNE_MODEL" in line and "--trust-code" in line
    assert "planted_module_xyz" not in sys.modules and not out.exists()
