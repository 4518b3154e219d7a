"""Pruned-model files: exact round trip, weights-only loading, atomic writes and
one-line ``CompressorError``s for every kind of bad file."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import pytest
import torch

from compressor import (
    CompressorError,
    CostModel,
    ModelSpec,
    PruningPlan,
    SelectionConfig,
    apply_plan,
    count_params,
    group_l2,
    load_pruned,
    save_pruned,
    select_plan,
)
from compressor.engine.plan import GroupPlan
from compressor.runfiles.modelfile import FORMAT, read_pruned
from compressor.models.zoo import build

SPEC = ModelSpec("resnet20", 10, (3, 32, 32))


def _randomised_resnet20(seed: int = 0) -> torch.nn.Module:
    """resnet20 with non-trivial weights *and* BN statistics, so eval outputs depend on all of them."""
    torch.manual_seed(seed)
    model = build("resnet20", 10)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
            elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.weight.add_(0.01 * torch.randn_like(module.weight))
    return model.eval()


def _prune(reduction: float, seed: int = 0):
    model = _randomised_resnet20(seed)
    graph = SPEC.analyse(model)
    cost = CostModel(graph, model)
    plan = select_plan(graph, cost, group_l2(graph, model), SelectionConfig(reduction))
    dense_params = count_params(model)
    return apply_plan(model, graph, plan).eval(), plan, dense_params


@pytest.fixture(scope="module")
def pruned():
    """(pruned model, plan, dense param count) at 50 % MACs reduction."""
    return _prune(0.5)


@pytest.fixture(scope="module")
def other_pruned():
    """The same network pruned by 30 %: a different architecture."""
    return _prune(0.3)


@pytest.fixture(scope="module")
def saved(pruned, tmp_path_factory) -> Path:
    model, plan, _ = pruned
    return save_pruned(tmp_path_factory.mktemp("saved") / "resnet20_pruned.pt", model, SPEC, plan)


def _torch_file(path: Path, payload) -> Path:
    torch.save(payload, path)
    return path


def _assert_one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert message.strip(), "empty error message"
    assert "\n" not in message.strip(), f"message is not one line:\n{message}"
    assert "Traceback" not in message
    return message


# -- round trip --------------------------------------------------------------------------


def test_round_trip_gives_identical_outputs_spec_and_plan(pruned, saved):
    model, plan, dense_params = pruned
    loaded, spec, loaded_plan = load_pruned(saved)

    assert spec == SPEC
    assert loaded_plan.to_dict() == plan.to_dict()
    assert not loaded.training
    n_pruned = count_params(loaded)
    assert n_pruned == count_params(model) < dense_params

    torch.manual_seed(1)
    x = torch.randn(2, *SPEC.input_size)
    with torch.no_grad():
        expected, actual = model.eval()(x), loaded(x)
    assert expected.shape == (2, 10)
    assert expected.std() > 1e-3, "outputs are trivial; the comparison would prove nothing"
    assert torch.equal(expected, actual), (expected - actual).abs().max()

    loaded_state = loaded.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded_state[key], value), key


def test_file_is_plain_weights_only_torch(saved):
    payload = torch.load(saved, map_location="cpu", weights_only=True)
    assert payload["format"] == FORMAT
    assert payload["spec"] == SPEC.to_dict()
    assert set(payload) == {"format", "spec", "plan", "earlier_plans", "state_dict", "state_metadata", "sha256"}
    assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())


def test_read_pruned_does_not_need_to_build(saved, pruned):
    spec, plans, state_dict = read_pruned(saved)
    assert spec == SPEC and [p.to_dict() for p in plans] == [pruned[1].to_dict()]
    assert set(state_dict) == set(pruned[0].state_dict())


# -- atomic save -------------------------------------------------------------------------


def test_save_leaves_no_temporary_file(pruned, tmp_path):
    model, plan, _ = pruned
    target = tmp_path / "nested" / "model.pt"
    assert save_pruned(target, model, SPEC, plan) == target
    save_pruned(target, model, SPEC, plan)  # overwriting is fine too
    assert sorted(os.listdir(target.parent)) == ["model.pt"]
    assert not [p for p in os.listdir(target.parent) if p.endswith(".tmp")]


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(pruned, saved, tmp_path, monkeypatch):
    model, plan, _ = pruned
    target = tmp_path / "model.pt"
    target.write_bytes(saved.read_bytes())
    before = target.read_bytes()

    def crash(obj, stream, *args, **kwargs):
        stream.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_pruned(target, model, SPEC, plan)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.pt"]


# -- files that must be refused ----------------------------------------------------------


class _RunsCode:
    """Unpickling this runs a shell command: the classic malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_the_crafted_pickle_really_is_malicious(tmp_path):
    """Control: plain unpickling of the same bytes does run the command."""
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(_RunsCode(marker)))
    assert marker.exists()


@pytest.mark.parametrize("writer", ["pickle.dump", "torch.save", "inside_valid_payload"])
def test_code_running_pickle_is_refused(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if writer == "pickle.dump":
        with path.open("wb") as stream:
            pickle.dump(_RunsCode(marker), stream, protocol=2)
    elif writer == "torch.save":
        torch.save(_RunsCode(marker), path)
    else:
        torch.save({"format": FORMAT, "spec": SPEC.to_dict(), "plan": _RunsCode(marker), "state_dict": {}}, path)

    with pytest.raises(CompressorError) as excinfo:
        load_pruned(path)
    message = _assert_one_line_error(excinfo)
    assert str(path) in message
    assert not marker.exists(), "loading ran code from the file"


@pytest.mark.parametrize("kind", ["first_100_bytes", "first_half", "empty", "random_bytes"])
def test_truncated_or_corrupt_file_is_refused(saved, tmp_path, kind):
    data = saved.read_bytes()
    content = {
        "first_100_bytes": data[:100],
        "first_half": data[: len(data) // 2],
        "empty": b"",
        "random_bytes": torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
        .to(torch.uint8)
        .numpy()
        .tobytes(),
    }[kind]
    path = tmp_path / "corrupt.pt"
    path.write_bytes(content)
    with pytest.raises(CompressorError) as excinfo:
        load_pruned(path)
    assert str(path) in _assert_one_line_error(excinfo)


@pytest.mark.parametrize(
    "content",
    [b"h\x00", b"j\x00\x00\x00\x00", b".", b"\x80\x02."],
    ids=["BINGET_KeyError", "LONG_BINGET_KeyError", "STOP_IndexError", "PROTO_STOP_IndexError"],
)
def test_garbage_that_trips_the_unpickler_is_refused(tmp_path, content):
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    with pytest.raises(CompressorError):
        load_pruned(path)


@pytest.mark.parametrize("missing", ["no_such_file.pt", "a_directory"])
def test_missing_path_is_refused(tmp_path, missing):
    path = tmp_path / missing
    if missing == "a_directory":
        path.mkdir()
    with pytest.raises(CompressorError, match="no such pruned model file") as excinfo:
        load_pruned(path)
    _assert_one_line_error(excinfo)


@pytest.mark.parametrize(
    "payload",
    [
        {"format": "compressor.pruned-model/0"},
        {"format": "something-else", "spec": SPEC.to_dict(), "plan": {"version": 1, "groups": {}}, "state_dict": {}},
        {"spec": SPEC.to_dict()},
        [1, 2, 3],
        torch.zeros(3),
    ],
    ids=["old_format", "wrong_format", "no_format", "list", "tensor"],
)
def test_valid_torch_file_with_wrong_format_is_refused(tmp_path, payload):
    path = _torch_file(tmp_path / "other.pt", payload)
    with pytest.raises(CompressorError, match="expected format") as excinfo:
        load_pruned(path)
    _assert_one_line_error(excinfo)


def test_damaged_payload_is_refused(tmp_path):
    path = _torch_file(tmp_path / "damaged.pt", {"format": FORMAT, "plan": {"version": 1, "groups": {}}})
    with pytest.raises(CompressorError, match="damaged") as excinfo:
        load_pruned(path)
    _assert_one_line_error(excinfo)


def test_weights_of_another_plan_are_refused(pruned, other_pruned, tmp_path):
    """State dict of a 30 % model stored with the 50 % plan: the weights do not fit."""
    other_model, other_plan, _ = other_pruned
    model, plan, _ = pruned
    assert other_plan.to_dict() != plan.to_dict()
    path = save_pruned(tmp_path / "mismatch.pt", other_model, SPEC, plan)
    with pytest.raises(CompressorError, match="do not fit") as excinfo:
        load_pruned(path)
    assert str(path) in str(excinfo.value)


def test_weights_of_another_plan_message_is_one_line(pruned, other_pruned, tmp_path):
    other_model = other_pruned[0]
    path = save_pruned(tmp_path / "mismatch.pt", other_model, SPEC, pruned[1])
    with pytest.raises(CompressorError) as excinfo:
        load_pruned(path)
    _assert_one_line_error(excinfo)


@pytest.mark.parametrize(
    "plan",
    [
        {"version": 1, "groups": {"no.such.group": {"size": 16, "kept": [0]}}},
        {"version": 1, "groups": {"conv1": {"size": 3, "kept": [0]}}},
    ],
    ids=["unknown_group", "wrong_group_size"],
)
def test_plan_that_does_not_fit_the_model_is_refused(tmp_path, plan):
    path = _torch_file(tmp_path / "plan.pt", {"format": FORMAT, "spec": SPEC.to_dict(), "plan": plan, "state_dict": {}})
    with pytest.raises(CompressorError) as excinfo:
        load_pruned(path)
    _assert_one_line_error(excinfo)


def test_unknown_model_name_in_file_is_refused(pruned, tmp_path):
    spec = dict(SPEC.to_dict(), name="resnt20")
    path = _torch_file(
        tmp_path / "name.pt", {"format": FORMAT, "spec": spec, "plan": pruned[1].to_dict(), "state_dict": {}}
    )
    with pytest.raises(CompressorError, match="resnet20"):
        load_pruned(path)


def test_plan_groups_not_a_mapping_in_file_is_refused(tmp_path):
    path = _torch_file(
        tmp_path / "groups.pt", {"format": FORMAT, "spec": SPEC.to_dict(), "plan": {"groups": [1]}, "state_dict": {}}
    )
    with pytest.raises(CompressorError):
        load_pruned(path)


def test_spec_with_wrong_input_size_is_refused(pruned, tmp_path):
    spec = dict(SPEC.to_dict(), input_size=[1, 32, 32])
    path = _torch_file(
        tmp_path / "size.pt", {"format": FORMAT, "spec": spec, "plan": pruned[1].to_dict(), "state_dict": {}}
    )
    with pytest.raises(CompressorError):
        load_pruned(path)


# -- PruningPlan (de)serialisation -------------------------------------------------------


def test_plan_json_round_trip(pruned):
    plan = pruned[1]
    again = PruningPlan.from_json(plan.to_json())
    assert again == plan
    assert again.to_dict() == plan.to_dict()
    assert again.kept_channels() == plan.kept_channels() < plan.total_channels()
    small = PruningPlan({"a": GroupPlan(4, (0, 3)), "b": GroupPlan(2, (1,))})
    assert PruningPlan.from_json(small.to_json()) == small


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {},
        "groups",
        {"groups": {"a": None}},
        {"groups": {"a": {"size": 4}}},
        {"groups": {"a": {"kept": [0]}}},
        {"groups": {"a": {"size": "x", "kept": [0]}}},
        {"groups": {"a": {"size": 4, "kept": 3}}},
        {"groups": {"a": {"size": 4, "kept": ["zero"]}}},
        {"groups": {"a": {"size": 4, "kept": []}}},
        {"groups": {"a": {"size": 4, "kept": [4]}}},
        {"groups": {"a": {"size": 4, "kept": [-1]}}},
        {"groups": {"a": {"size": 4, "kept": [1, 1]}}},
    ],
)
def test_plan_from_dict_rejects_malformed_data(data):
    with pytest.raises(CompressorError) as excinfo:
        PruningPlan.from_dict(data)
    _assert_one_line_error(excinfo)


@pytest.mark.parametrize("groups", [[1], None, "abc"])
def test_plan_from_dict_rejects_groups_that_are_not_a_mapping(groups):
    with pytest.raises(CompressorError):
        PruningPlan.from_dict({"groups": groups})


def test_plan_from_json_rejects_text_that_is_not_json():
    with pytest.raises(CompressorError, match="not JSON"):
        PruningPlan.from_json("{not json")
