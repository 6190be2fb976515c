"""Checkpoints: RNG state round trip, atomic safe save/load, rebuilding models, loading step-1 weights."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from sparks.errors import UsageError
from sparks.models import create
from sparks.train import checkpoint as ckpt


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3).tolist()


def test_rng_state_round_trip_is_exact():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    state = ckpt.rng_state()
    first = _draws()
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    ckpt.set_rng_state(state)
    assert _draws() == first


def test_rng_state_survives_a_weights_only_save(tmp_path):
    torch.manual_seed(0)
    state = ckpt.rng_state()
    ckpt.save_checkpoint({"format_version": 1, "model": {}, "rng": [state]}, tmp_path / "c.pt")
    loaded = ckpt.load_checkpoint(tmp_path / "c.pt")
    first = _draws()
    ckpt.set_rng_state(loaded["rng"][0])
    assert _draws() == first


def _tiny(method: str = "sparks", width: float = 0.0625):
    torch.manual_seed(0)
    return create("vgg_small", num_classes=10, in_channels=1, width=width, tau=5, method=method)


def _state(model) -> dict:
    return {"format_version": ckpt.FORMAT_VERSION, "model_name": model.model_name,
            "model_args": dict(model.model_args), "model": model.state_dict()}


def test_save_is_atomic_and_load_model_rebuilds_the_model(tmp_path):
    model = _tiny().eval()
    path = tmp_path / "m.pt"
    ckpt.save_checkpoint(_state(model), path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind
    loaded = ckpt.load_model(path)
    assert not loaded.training
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("content", [b"", b"garbage bytes", b"PK\x03\x04 not a zip"])
def test_corrupt_file_is_not_a_sparks_checkpoint(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match="is not a sparks checkpoint"):
        ckpt.load_model(path)


def test_foreign_files_are_refused(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(UsageError, match="is not a sparks checkpoint: no format_version"):
        ckpt.load_checkpoint(plain)
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"format_version": 1, "model": {}, "obj": ValueError("x")}, f, protocol=2)
    with pytest.raises(UsageError, match="is not a sparks checkpoint"):
        ckpt.load_checkpoint(evil)
    with pytest.raises(UsageError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")


def test_weights_that_do_not_fit_the_named_model_are_refused(tmp_path):
    state = _state(_tiny())
    state["model_args"]["width"] = 0.125
    ckpt.save_checkpoint(state, tmp_path / "m.pt")
    with pytest.raises(UsageError, match="weights do not fit vgg_small"):
        ckpt.load_model(tmp_path / "m.pt")


def test_init_from_float_loads_latent_weights_and_restarts_selection():
    float_model = _tiny("float")
    with torch.no_grad():
        for p in float_model.parameters():
            p.add_(torch.randn_like(p))
    model = _tiny("topn")
    ckpt.load_init_weights(model, float_model.state_dict(), "step1.pt")
    source = float_model.state_dict()
    for key, value in model.state_dict().items():
        if ".quantizer." not in key:
            assert torch.equal(value, source[key]), key
    from sparks.core.methods import frequency_order

    conv = model.features[0].conv
    assert torch.equal(conv.quantizer.selected, frequency_order(source["features.0.conv.weight"])[:32])


def test_init_from_names_the_first_bad_key():
    with pytest.raises(UsageError, match="key 'stem.0.weight' has shape"):
        ckpt.load_init_weights(_tiny("sparks", width=0.0625), _tiny("float", width=0.125).state_dict(), "x.pt")
    source = _tiny("float").state_dict()
    source["extra.weight"] = torch.zeros(1)
    with pytest.raises(UsageError, match="key 'extra.weight' is not in the model"):
        ckpt.load_init_weights(_tiny(), source, "x.pt")
    source = _tiny("float").state_dict()
    del source["fc.bias"]
    with pytest.raises(UsageError, match="lacks key 'fc.bias'"):
        ckpt.load_init_weights(_tiny(), source, "x.pt")


def test_unwrap_removes_wrappers():
    model = _tiny()

    class Compiled(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    assert ckpt.unwrap(Compiled(model)) is model
    assert ckpt.unwrap(model) is model


def _hostile_states() -> list[tuple[str, dict]]:
    """(what, state) pairs: legal torch files whose fields are hostile, each in one way."""
    base = _state(_tiny())
    base.update(optimizer={"state": {}, "param_groups": []}, epoch=1, step=3, best_metric=50.0, config={}, data={},
                rng=[ckpt.rng_state()])
    cases = [(f"format_version={v!r}", {**base, "format_version": v}) for v in ("1", None, 1.0, True, -1, 0, [1])]
    cases += [(f"model={v!r}", {**base, "model": v}) for v in ("x", None, [1], {"a": 1}, {1: torch.zeros(1)})]
    cases += [(f"{k}={v!r}", {**base, k: v}) for k in ("config", "data", "model_args", "scheduler")
              for v in ("x", [1], 3)]
    cases += [(f"optimizer={v!r}", {**base, "optimizer": v}) for v in (None, "x", {"state": 1}, {"state": {}})]
    cases += [(f"epoch={v!r}", {**base, "epoch": v}) for v in (-1, "2", 1.5, None)]
    cases += [(f"best_metric={v!r}", {**base, "best_metric": v}) for v in ("x", None, float("nan"))]
    cases += [(f"rng={v!r:.30}", {**base, "rng": v}) for v in (None, "x", [None], [{}], [{"python": 1}])]
    bad_py = ckpt.rng_state()
    bad_py["python"]["state"] = torch.zeros(3, dtype=torch.int64)
    cases.append(("rng python state of 3", {**base, "rng": [bad_py]}))
    nan = dict(base["model"])
    nan["fc.weight"] = torch.full_like(nan["fc.weight"], float("nan"))
    cases.append(("NaN weight", {**base, "model": nan}))
    return cases


def test_hostile_checkpoint_fields_give_one_checkpoint_error(tmp_path):
    path = tmp_path / "h.pt"
    for what, state in _hostile_states():
        torch.save(state, path)
        with pytest.raises(ckpt.CheckpointError) as info:
            ckpt.load_model(path)
        assert "\n" not in str(info.value), what
    ckpt.save_checkpoint(_hostile_states()[0][1] | {"format_version": 1}, path)  # the base state itself loads
    ckpt.load_model(path)


@pytest.mark.parametrize("args, match", [
    ({"width": 64.0}, "parameter count"), ({"width": float("inf")}, "plain scalar"), ({"width": 1e308}, "width"),
    ({"width": 0}, "width"), ({"width": -1}, "width"), ({"num_classes": 10**9}, "num_classes"),
    ({"num_classes": -5}, "num_classes"), ({"in_channels": "3"}, "in_channels"), ({"tau": 12}, "tau"),
    ({"seed": 2**70}, "plain scalar"), ({"width": [1]}, "plain scalar")])
def test_model_args_are_checked_before_the_model_is_built(tmp_path, args, match):
    state = _state(_tiny())
    state["model_args"].update(args)
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(ckpt.CheckpointError, match=match):
        ckpt.load_model(tmp_path / "m.pt")


def test_limits_can_be_raised_on_purpose(tmp_path, monkeypatch):
    from sparks.limits import Limits, described_params

    model = _tiny()
    count = described_params("vgg_small", dict(model.model_args))
    assert count >= sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    ckpt.save_checkpoint(_state(model), tmp_path / "m.pt")
    with pytest.raises(ckpt.CheckpointError, match="max_params"):
        ckpt.load_model(tmp_path / "m.pt", limits=Limits(max_params=count - 1))
    ckpt.load_model(tmp_path / "m.pt", limits=Limits(max_params=count))
    monkeypatch.setenv("SPARKS_LIMITS", f"max_params={count - 1}")
    with pytest.raises(ckpt.CheckpointError, match="max_params"):
        ckpt.load_model(tmp_path / "m.pt")


def test_zip_bombs_and_foreign_layouts_are_refused_before_loading(tmp_path):
    import zipfile

    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\0" * 10_000_000)
    with pytest.raises(ckpt.CheckpointError, match="compressed"):
        ckpt.load_checkpoint(path)
    legacy = tmp_path / "legacy.pt"
    torch.save({"format_version": 1, "model": {}}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ckpt.CheckpointError, match=r"it is a legacy \(non-zip\) torch pickle"):
        ckpt.load_checkpoint(legacy)


@pytest.mark.parametrize("key, value, match", [
    ("features.0.conv.quantizer.selected", 600, "codeword indices"),
    ("features.0.conv.quantizer.selected", -1, "codeword indices"),
    ("features.0.bn.running_var", -1.0, "variance"),
    ("fc.weight", 3e38, "huge"),
    ("fc.weight", float("inf"), "infinite")])
def test_values_a_model_cannot_run_on_are_refused(tmp_path, key, value, match):
    state = _state(_tiny("topn"))
    state["model"][key] = state["model"][key].clone()
    state["model"][key].view(-1)[0] = value
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(ckpt.CheckpointError, match=match):
        ckpt.load_model(tmp_path / "m.pt")
