import torch

from sparks.core.activation import LearnableBias, RPReLU, binary_sign


def test_sign_is_exactly_pm1_with_zero_to_plus_one():
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, -1e-30, 3.0])
    assert binary_sign(x).tolist() == [-1.0, 1.0, 1.0, 1.0, -1.0, 1.0]


def test_approx_sign_gradient_hand_computed():
    x = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.25, 0.999, 1.0, 2.0], requires_grad=True)
    binary_sign(x).sum().backward()
    # 2 + 2x on [-1, 0), 2 - 2x on [0, 1), 0 elsewhere
    expected = [0.0, 0.0, 1.0, 2.0, 1.5, 0.002, 0.0, 0.0]
    assert torch.allclose(x.grad, torch.tensor(expected), atol=1e-6)


def test_learnable_bias_and_rprelu():
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    bias = LearnableBias(3)
    assert torch.equal(bias(x), x)
    act = RPReLU(3, init_slope=0.25)
    with torch.no_grad():
        act.shift_in.bias.fill_(0.5)
        act.shift_out.bias.fill_(-1.0)
    y = x + 0.5
    assert torch.allclose(act(x), torch.where(y >= 0, y, 0.25 * y) - 1.0)
