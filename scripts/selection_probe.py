"""Does the learned selection beat its own top-n initialisation? A reconstruction probe, several settings.

    python scripts/selection_probe.py [--steps 600] [--seeds 3]

Choose n = 16 codewords (τ = 4) so that α·V[idx] reconstructs 4,096 fixed latent kernels (64×64×3×3). Two kernel
populations:
* ``mixture`` — 75 % small kernels with concentrated sign patterns (they dominate the counts) and 25 % large,
  diverse kernels (they dominate the error): frequency ignores magnitude, so top-n is not optimal;
* ``smooth`` — one smooth profile times a random sign plus noise: top-n is close to a local optimum here.
Prints the final reconstruction loss relative to top-n (negative = learned is better) for the default selector
and for ablations (no tangent projection, no hysteresis, Gumbel noise). The tests use :func:`learn_selection` and
:func:`mixture_kernels` from here.
"""

from __future__ import annotations

import argparse

import torch

from sparks.core.layers import SubBitConv2d
from sparks.core.methods import channel_alpha
from sparks.core.selection import TemperatureSchedule

_PROFILE = torch.tensor([[1.0, 0.8, 0.6], [0.8, 1.0, 0.8], [0.6, 0.8, 1.0]])


def mixture_kernels(seed: int, channels: int = 64) -> torch.Tensor:
    """Small concentrated kernels (75 %) mixed with large diverse ones (25 %)."""
    g = torch.Generator().manual_seed(seed)
    small = 0.3 * (torch.randn(channels, channels, 1, 1, generator=g) * _PROFILE
                   + 0.5 * torch.randn(channels, channels, 3, 3, generator=g))
    big = 1.5 * torch.randn(channels, channels, 3, 3, generator=g)
    is_big = (torch.rand(channels, channels, 1, 1, generator=g) < 0.25).float()
    return is_big * big + (1 - is_big) * small


def smooth_kernels(seed: int, channels: int = 64) -> torch.Tensor:
    """One smooth spatial profile with a random per-kernel amplitude, plus noise."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(channels, channels, 1, 1, generator=g) * _PROFILE + 0.7 * torch.randn(
        channels, channels, 3, 3, generator=g)


def reconstruction_loss(layer: SubBitConv2d, weight: torch.Tensor) -> torch.Tensor:
    return ((layer.quantizer(weight) * channel_alpha(weight) - weight) ** 2).mean()


def learn_selection(weight: torch.Tensor, steps: int = 600, lr: float = 0.05, tau: int = 4,
                    **method_kwargs: object) -> tuple[float, float]:
    """Learn the selection (scores only, Adam, temperature 1 → 0.05); return (top-n loss, learned loss)."""
    torch.manual_seed(0)
    layer = SubBitConv2d(weight.shape[1], weight.shape[0], tau=tau, method="sparks", init="frequency",
                         **method_kwargs)
    layer.weight.data.copy_(weight)
    layer.reset_selection()
    selector = layer.quantizer.selector
    layer.eval()
    with torch.no_grad():
        initial = reconstruction_loss(layer, weight).item()
    optimizer = torch.optim.Adam([selector.scores], lr=lr)
    schedule = TemperatureSchedule(1.0, 0.05, steps)
    layer.train()
    for step in range(steps):
        selector.set_temperature(schedule(step))
        loss = reconstruction_loss(layer, weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    layer.eval()
    with torch.no_grad():
        final = reconstruction_loss(layer, weight).item()
    return initial, final


SETTINGS = {
    "default (tangent, hysteresis 0.5)": {},
    "no tangent projection": {"tangent": False},
    "no hysteresis": {"switch_margin": 0.0},
    "Gumbel noise 0.3": {"noise": 0.3},
    "20 Sinkhorn iterations": {"sinkhorn_iters": 20},
}


def main() -> None:
    parser = argparse.ArgumentParser(description="learned selection vs top-n on a reconstruction probe")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"final loss vs top-n init, {args.steps} steps, seeds 0..{args.seeds - 1} (negative = learned better)")
    print(f"| setting | {' | '.join(f'mixture s{s}' for s in range(args.seeds))} | "
          f"{' | '.join(f'smooth s{s}' for s in range(args.seeds))} |")
    print("|---" * (1 + 2 * args.seeds) + "|")
    for name, kwargs in SETTINGS.items():
        cells = []
        for kernels in (mixture_kernels, smooth_kernels):
            for seed in range(args.seeds):
                initial, final = learn_selection(kernels(seed), steps=args.steps, **kwargs)
                cells.append(f"{final / initial - 1:+.2%}")
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
