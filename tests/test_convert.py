import logging

import pytest
import torch
from torch import nn

import sparks
from sparks.core.convert import ConversionReport, convert
from sparks.core.layers import SubBitConv2d, subbit_layers


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(
            nn.Conv2d(8, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.Conv2d(16, 16, 3, stride=2, padding=1),
            nn.Conv2d(16, 16, 1),  # 1x1: stays real
            nn.Conv2d(16, 16, 3, padding=1, groups=4),  # grouped: stays real
            nn.Conv2d(16, 16, 5, padding=2),  # 5x5: stays real
        )
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).mean((2, 3)))


def test_convert_any_model_in_place_and_report():
    torch.manual_seed(0)
    model = TinyNet()
    float_state = {k: v.clone() for k, v in model.state_dict().items()}
    report = ConversionReport()
    out = sparks.convert(model, tau=5, report=report)
    assert out is model
    assert report.converted == ["body.0", "body.2"]
    assert set(report.skipped) == {"stem", "body.3", "body.4", "body.5"}
    assert "3x3" in report.skipped["body.5"] and "groups" in report.skipped["body.4"]
    assert [name for name, _ in subbit_layers(model)] == ["body.0", "body.2"]
    # predictable keys: every float key is still there with the same value (latent weights)
    state = model.state_dict()
    for key, value in float_state.items():
        assert torch.equal(state[key], value)
    assert "body.0.quantizer.selector.scores" in state
    layer = model.body[2]
    assert layer.stride == (2, 2) and layer.bias is not None
    model(torch.randn(2, 3, 8, 8)).sum().backward()


def test_convert_skip_list_and_first_conv_option():
    model = convert(TinyNet(), tau=4, method="topn", skip=["body.2"], skip_first=False)
    assert [n for n, _ in subbit_layers(model)] == ["stem", "body.0"]


def test_convert_only_rejects_ineligible_or_missing():
    with pytest.raises(ValueError, match="cannot convert 'body.3'.*1x1"):
        convert(TinyNet(), tau=5, only=["body.3"])
    with pytest.raises(ValueError, match="'nope' is not an nn.Conv2d"):
        convert(TinyNet(), tau=5, only=["nope"])
    model = convert(TinyNet(), tau=5, only=["stem"])
    assert [n for n, _ in subbit_layers(model)] == ["stem"]


def test_convert_bad_arguments():
    with pytest.raises(ValueError, match="tau must be an int in 1..9, got 12"):
        convert(TinyNet(), tau=12)
    with pytest.raises(ValueError, match="unknown method 'foo'"):
        convert(TinyNet(), method="foo")


def test_float_method_without_binary_activation_is_the_original_model():
    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)
    convert(model, tau=9, method="float", binary_activation=False)
    assert isinstance(model.body[0], SubBitConv2d)
    assert torch.allclose(model(x), expected, atol=1e-6)


def test_skipped_layers_are_logged(caplog):
    with caplog.at_level(logging.INFO, logger="sparks.core.convert"):
        convert(TinyNet(), tau=5)
    assert "body.5" in caplog.text


def test_set_temperature_reaches_every_selector():
    model = convert(TinyNet(), tau=5)
    sparks.set_temperature(model, 0.25)
    assert all(layer.quantizer.selector.temperature == 0.25 for _, layer in subbit_layers(model))
