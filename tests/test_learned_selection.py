"""The learned selector must beat its own top-n (frequency) initialisation where top-n is not optimal.

The probe (scripts/selection_probe.py): choose n = 16 codewords so that α·V[idx] reconstructs 4,096 fixed latent
kernels; most kernels are small with concentrated sign patterns (they dominate the counts), a quarter are large and
diverse (they dominate the error). Counting frequencies ignores magnitude, so top-n leaves error on the table.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from selection_probe import learn_selection, mixture_kernels  # noqa: E402


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learned_selection_beats_its_top_n_initialisation(seed):
    initial, final = learn_selection(mixture_kernels(seed))
    assert final < 0.98 * initial, f"learned {final:.4f} vs top-n {initial:.4f}"


def test_radial_gradient_ablation_is_worse():
    """Without the tangent projection the same loop does worse (documents why the projection is on)."""
    with_projection = [learn_selection(mixture_kernels(s), steps=300)[1] for s in (0, 1)]
    without = [learn_selection(mixture_kernels(s), steps=300, tangent=False)[1] for s in (0, 1)]
    assert sum(with_projection) < sum(without)
