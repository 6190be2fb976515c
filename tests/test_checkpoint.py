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
