"""``sparks models``: every registered model listed with its parameter and sub-bit layer counts."""

from __future__ import annotations

import json

from sparks.cli import main
from sparks.cli.models_cmd import describe


def test_describe_counts_match_the_architecture():
    # ReActNet ResNet-18: 16 binary 3×3 convs, 10,985,472 binary weights (docs: SNN's published storage figures)
    row = describe("resnet18_cifar")
    assert (row["subbit_layers"], row["binary_weights"], row["num_classes"]) == (16, 10_985_472, 10)
    assert (row["method"], row["tau"]) == ("sparks", 5)
    # VGG-Small (hand count): 3·128·9 stem + binary 128·128, 128·256, 256·256, 256·512, 512·512 (×9) + FC 512·10,
    # plus 3 BN/RPReLU/bias vectors per layer; the binary part alone:
    binary = 9 * (128 * 128 + 128 * 256 + 256 * 256 + 256 * 512 + 512 * 512)
    sign = describe("vgg_small", method="sign")
    assert (sign["subbit_layers"], sign["binary_weights"], sign["selection_params"]) == (5, binary, 0)
    assert sign["params"] > binary + 3 * 128 * 9 + 512 * 10


def test_cli_lists_all_models(capsys):
    assert main(["models", "--method", "sign", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"reactnet18", "reactnet34", "resnet18_cifar", "vgg_small"}
    assert rows["reactnet34"]["subbit_layers"] == 32 and rows["reactnet18"]["num_classes"] == 1000
    assert main(["models", "--method", "sign", "--width", "0.25"]) == 0
    out = capsys.readouterr().out
    assert "reactnet18" in out and "vgg_small" in out and "sub-bit layers" in out


def test_cli_bad_method_is_one_line_error(capsys):
    assert main(["models", "--method", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sparks models: error: unknown method 'nope'") and "\n" not in err


def test_builder_arguments_are_checked_before_allocating():
    import math

    import pytest

    from sparks.models import create
    from sparks.models.args import resolve_tau

    for kwargs, message in (({"width": 0}, "width must be a number in"), ({"width": math.inf}, "width"),
                            ({"width": -1.0}, "width"), ({"num_classes": 0}, "num_classes must be an int in 1..65536"),
                            ({"num_classes": 10**9}, "num_classes"), ({"in_channels": True}, "in_channels")):
        with pytest.raises(ValueError, match=message):
            create("reactnet34", **kwargs)  # would be huge: fails in the argument check, not in an allocation
    assert [resolve_tau(m, None) for m in ("sparks", "sign", "float", "topn")] == [5, 9, 9, 5]
    assert resolve_tau("sign", 9) == 9 and resolve_tau("snn", 3) == 3
    with pytest.raises(ValueError, match="tau 5 contradicts method sign, which is always tau=9"):
        resolve_tau("sign", 5)
    with pytest.raises(ValueError, match="tau must be an int in 1..9"):
        resolve_tau("sparks", 10)
