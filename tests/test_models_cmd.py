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
