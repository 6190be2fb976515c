"""The public API: ``import sparks`` then every name in ``dir(sparks)`` works, submodules as attributes (as in
torchvision), without importing torch until a torch-backed name is used."""

from __future__ import annotations

import subprocess
import sys

import pytest

import sparks

PUBLIC = {"convert", "replace_module", "ConversionReport", "SubBitConv2d", "subbit_layers", "reset_selection",
          "set_temperature", "selection_parameters", "load_model", "summary", "export", "load", "SparksFormatError",
          "SparksError", "UsageError", "analysis", "bench", "cli", "complexity", "core", "deploy", "errors", "models",
          "runtime", "train", "__version__"}


def test_dir_lists_the_public_api_and_every_name_resolves():
    assert set(dir(sparks)) == PUBLIC
    for name in PUBLIC:
        assert getattr(sparks, name) is not None, name
    assert callable(sparks.models.create) and sparks.runtime.PackedModel.__name__ == "PackedModel"
    assert callable(sparks.deploy.format.read_sparks) and callable(sparks.train.TrainConfig)
    assert issubclass(sparks.SparksFormatError, sparks.SparksError) and issubclass(sparks.UsageError,
                                                                                      sparks.SparksError)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sparks.nope  # noqa: B018


def test_import_sparks_and_the_runtime_do_not_import_torch():
    code = ("import sys, sparks, sparks.runtime, sparks.deploy.format; from sparks.runtime import PackedModel; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
