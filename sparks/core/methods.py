"""Weight methods: how a layer turns its real latent kernels into α · codeword.

Every method owns a sub-codebook V (n × 9, ±1, distinct rows). In the forward pass each latent kernel w takes the
codeword of V with the largest inner product, scaled by its output channel's α = mean |W| (detached). Gradients reach
the latent weights through SNN's clipped straight-through estimator (only inside [-1, 1]) and, for learned methods,
reach V (summed over the kernels assigned to each codeword).

Registered methods (``get_method(name)``): ``float`` (no weight binarization: step 1 of the recipe), ``sign`` (plain
1-bit BNN), ``sparks`` (learned selection, :mod:`sparks.core.selection`), ``snn`` (SNN's learned codewords,
:mod:`sparks.core.snn`), ``topn`` (the n most frequent codewords at conversion), ``kmedoids`` (the n codewords
minimising the reconstruction error of the latent weights at conversion, :mod:`sparks.core.kmedoids`) and
``random`` (n distinct random codewords, seeded).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sparks.core.codebook import (
    NUM_CODEWORDS,
    codeword_frequencies,
    full_codebook,
    kernel_to_index,
    nearest_codeword,
)
from sparks.core.kmedoids import (
    accept_swaps,
    align_rows,
    best_swap_search,
    coverage_value,
    kmedoids_selection,
    sample_rows,
    scaled_kernels,
)
from sparks.core.selection import GumbelSinkhornSelector, tangent_gradient

METHODS: dict[str, type[WeightMethod]] = {}


def register_method(name: str) -> Callable[[type[WeightMethod]], type[WeightMethod]]:
    """Class decorator registering a weight method under ``name``; a duplicate name raises."""

    def wrap(cls: type[WeightMethod]) -> type[WeightMethod]:
        if name in METHODS:
            raise ValueError(f"weight method {name!r} is already registered")
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def get_method(name: str) -> type[WeightMethod]:
    """The weight-method class registered as ``name``; ``ValueError`` naming the known ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def check_tau(tau: object) -> int:
    """``tau`` as an int in 1..9, else ``ValueError``."""
    if isinstance(tau, bool) or not isinstance(tau, int) or not 1 <= tau <= 9:
        raise ValueError(f"tau must be an int in 1..9, got {tau!r}")
    return tau


def ste_clip(weight: torch.Tensor) -> torch.Tensor:
    """Zero in value, gradient of clip(w, -1, 1): added to a binarized weight it routes gradients to w (SNN's STE)."""
    clipped = weight.clamp(-1.0, 1.0)
    return clipped - clipped.detach()


def channel_alpha(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel scale α = mean |W| over (C_in, 3, 3), detached, shaped (C_out, 1, 1, 1)."""
    return weight.detach().abs().mean(dim=(1, 2, 3), keepdim=True)


class _GatherCodewords(torch.autograd.Function):
    """``codewords[idx]`` whose backward sums the kernels' gradients per codeword with ``index_add_``.

    Autograd's own backward of advanced indexing is a deterministic, sort-based ``index_put_`` that dominated a
    Sparks training step on CPU (~65 ms of ~160 ms for a ResNet-18); ``index_add_`` is several times faster. It runs
    on the transposed (9 × kernels) view: each of the 9 rows is then one contiguous pass, ~2.5× faster on CPU than
    the (kernels × 9) layout, and every sum still adds its kernels in index order, so the result is bit-identical
    (tests/test_overhead_equality.py).
    """

    @staticmethod
    def forward(ctx, codewords: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(idx)
        ctx.rows = codewords.shape[0]
        return codewords.index_select(0, idx)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (idx,) = ctx.saved_tensors
        if grad.device.type != "cpu":
            return grad.new_zeros(ctx.rows, grad.shape[1]).index_add_(0, idx, grad), None
        return grad.new_zeros(grad.shape[1], ctx.rows).index_add_(1, idx, grad.t()).t().contiguous(), None


def gather_codewords(codewords: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``codewords[idx]`` for a flat int64 ``idx``, Tensor[len(idx), 9], with a fast summed backward."""
    if codewords.requires_grad:
        return _GatherCodewords.apply(codewords, idx)
    return codewords.index_select(0, idx)


class WeightMethod(nn.Module):
    """Base class. Subclasses provide :meth:`codewords` (the sub-codebook, possibly with gradients)."""

    name = "base"
    binary = True  # False only for "float"
    # True: the method's parameters are selection scores on their own scale, trained at the loop's selection learning
    # rate (``sparks.selection_parameters``). False: they train with the network weights at the model learning rate.
    own_learning_rate = False

    def __init__(self, tau: int, **_: object) -> None:
        super().__init__()
        self.tau = check_tau(tau)
        self.n = 2**self.tau

    def initialize(self, weight: torch.Tensor) -> None:
        """(Re)start the selection from the current latent weights; fixed or learned methods override it."""

    def sync(self, weight: torch.Tensor) -> None:
        """Bring the selection up to date with the parameters before an evaluation (learned methods override it)."""

    def codewords(self) -> torch.Tensor:
        """The sub-codebook, Tensor[n, 9] of ±1 values (distinct rows)."""
        raise NotImplementedError

    def kernel_indices(self, weight: torch.Tensor, codewords: torch.Tensor | None = None) -> torch.Tensor:
        """Index of the nearest codeword for each kernel, int64 Tensor[C_out, C_in]."""
        return nearest_codeword(weight, self.codewords() if codewords is None else codewords)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """Unscaled forward weight V[idx] (+ zero-valued STE terms), Tensor[C_out, C_in, 3, 3] of exact ±1 values.

        The layer applies α to the convolution's output instead, so the binary sum stays an exact integer (what the
        packed runtime computes) before the single multiplication by α.
        """
        v = self.codewords()
        idx = self.kernel_indices(weight, v)
        return gather_codewords(v, idx.flatten()).reshape(weight.shape) + ste_clip(weight)


@register_method("float")
class FloatWeights(WeightMethod):
    """Real-valued weights (step 1 of the two-step recipe: binary activations, real weights)."""

    binary = False
    fixed_tau = 9  # τ is not a setting of this method: passing another one is a contradiction (sparks.train.config)

    def __init__(self, tau: int = 9, **kwargs: object) -> None:
        super().__init__(tau=9, **kwargs)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight


@register_method("sign")
class SignWeights(WeightMethod):
    """Plain 1-bit BNN: the full codebook, i.e. sign(w) (0 → +1). τ is always 9."""

    fixed_tau = 9

    def __init__(self, tau: int = 9, **kwargs: object) -> None:
        super().__init__(tau=9, **kwargs)
        self.register_buffer("_codebook", full_codebook(), persistent=False)

    def codewords(self) -> torch.Tensor:
        return self._codebook

    def kernel_indices(self, weight: torch.Tensor, codewords: torch.Tensor | None = None) -> torch.Tensor:
        return kernel_to_index(weight.detach())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.where(weight.detach() >= 0, 1.0, -1.0).to(weight.dtype) + ste_clip(weight)


class _FixedSelection(WeightMethod):
    """A sub-codebook chosen once (at initialisation) and stored in the ``selected`` buffer."""

    def __init__(self, tau: int, **kwargs: object) -> None:
        super().__init__(tau, **kwargs)
        self.register_buffer("selected", torch.arange(self.n, dtype=torch.int64))
        self.register_buffer("_codebook", full_codebook(), persistent=False)

    def codewords(self) -> torch.Tensor:
        return self._codebook[self.selected]


def frequency_order(weight: torch.Tensor) -> torch.Tensor:
    """All 512 codeword indices, most frequent sign pattern of ``weight`` first (ties: lower index first)."""
    counts = codeword_frequencies(weight)
    return torch.sort(-counts, stable=True).indices


@register_method("topn")
class TopNSelection(_FixedSelection):
    """Fixed: the n codewords most frequent among the latent kernels' sign patterns at initialisation."""

    def initialize(self, weight: torch.Tensor) -> None:
        self.selected.copy_(frequency_order(weight)[: self.n].to(self.selected.device))


@register_method("kmedoids")
class KMedoidsSelection(_FixedSelection):
    """Fixed: the n codewords that locally minimise Σ_k min_v ‖w_k − α_o·v‖² of the latent weights at initialisation.

    Training-free: best-swap local search from the top-n selection until no single swap lowers the error
    (:func:`~sparks.core.kmedoids.kmedoids_selection`). The bar a learned selection has to clear.
    """

    def initialize(self, weight: torch.Tensor) -> None:
        order = frequency_order(weight)[: self.n]
        self.selected.copy_(kmedoids_selection(weight, self.n, init=order).to(self.selected.device))


@register_method("random")
class RandomSelection(_FixedSelection):
    """Fixed: n distinct codewords drawn uniformly at random (seeded per layer by ``seed``)."""

    def __init__(self, tau: int, seed: int = 0, **kwargs: object) -> None:
        super().__init__(tau, **kwargs)
        self.seed = seed

    def initialize(self, weight: torch.Tensor) -> None:
        generator = torch.Generator().manual_seed(self.seed)
        self.selected.copy_(torch.randperm(NUM_CODEWORDS, generator=generator)[: self.n])


class StepCounter(nn.Module):
    """Mixin for a method with a ``steps`` buffer (training forwards so far) and a host copy of it, so that counting
    and reading a step costs no device→host sync; the buffer is read once after a ``load_state_dict`` (a resume)."""

    _host_steps: int | None = 0  # the host copy; None: ``steps`` may have changed, read it on next use

    def step_count(self) -> int:
        """Training steps so far (the ``steps`` buffer, read from the device once after a load)."""
        if self._host_steps is None:
            self._host_steps = int(self.steps)
        return self._host_steps

    def count_step(self) -> int:
        """Add one training step to ``steps`` (on its device, no sync) and return the new count."""
        count = self.step_count() + 1
        self.steps += 1
        self._host_steps = count
        return count

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._host_steps = None  # ``steps`` may have changed


@register_method("sparks")
class SparksSelection(StepCounter, WeightMethod):
    """Learned selection with Gumbel-Sinkhorn and PSTE (the Sparks method), with exact acceptance of switches.

    The scores learn from the PSTE gradient (Gumbel noise on the soft path) and propose a selection every training
    step. With ``exact=True`` a proposed switch is taken only if it lowers the layer's reconstruction error
    E = Σ_k h_k min_v ‖w_k − α_o·v‖² of the current latent weights (its exact effect, not the first-order estimate).
    Every ``reselect_every`` steps a best-swap search (:mod:`sparks.core.kmedoids`) re-selects from the current
    latent weights, and the better of its result and a tracked reference (the kmedoids selection at initialisation,
    improved by best swaps at each re-selection) is kept. h_k = 1, or with ``weighting="grad"`` a running mean of
    kernel k's squared loss gradient (a diagonal Fisher proxy), so the error that counts is the one the task feels.
    A taken switch swaps the two scores of its row, a vetoed one drops the proposed score κ below the current one:
    the scores learn from the exact evaluation too. docs/method.md lists each departure from the paper.

    Args:
        init: ``"kmedoids"`` (the reconstruction-optimal start), ``"frequency"`` (most frequent codewords first)
            or ``"random"``.
        seed: seed of the random initialisation.
        tangent: drop the radial component of the codeword gradients (:func:`~sparks.selection.tangent_gradient`).
        exact: accept switches by their exact effect (False: the plain PSTE read-off of the paper).
        reselect_every: training steps between best-swap re-selections (0: never).
        weighting: ``"none"`` or ``"grad"`` (per-kernel weights h from the loss gradient).
        max_kernels: exact evaluations use a random sample of this many kernels in larger layers.
        min_gain: a switch must raise F = Σ_k h_k α_o max_v w_k·v by this fraction (a switch disturbs the network:
            its BatchNorm statistics and the weights adapted to the old codeword; the value is a guess, not tuned).
        Other keyword arguments go to :class:`~sparks.selection.GumbelSinkhornSelector`.
    """

    own_learning_rate = True

    def __init__(self, tau: int, init: str = "kmedoids", seed: int = 0, sinkhorn_iters: int = 10,
                 noise: float = 1.0, init_margin: float = 1.0, switch_margin: float = 0.5, tangent: bool = True,
                 exact: bool = True, reselect_every: int = 100, weighting: str = "none",
                 max_kernels: int = 16_384, min_gain: float = 1e-3, **kwargs: object) -> None:
        super().__init__(tau, **kwargs)
        if init not in ("kmedoids", "frequency", "random"):
            raise ValueError(f"unknown sparks init {init!r}; expected 'kmedoids', 'frequency' or 'random'")
        if weighting not in ("none", "grad"):
            raise ValueError(f"unknown sparks weighting {weighting!r}; expected 'none' or 'grad'")
        self.init, self.seed, self.tangent, self.exact = init, seed, tangent, exact
        self.reselect_every, self.weighting, self.max_kernels = reselect_every, weighting, max_kernels
        self.min_gain = min_gain
        self.selector = GumbelSinkhornSelector(self.n, sinkhorn_iters=sinkhorn_iters, noise=noise,
                                               init_margin=init_margin, switch_margin=switch_margin)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))  # counted by StepCounter, no sync
        self.register_buffer("reference", torch.arange(self.n, dtype=torch.int64))  # the tracked best-swap optimum
        self.register_buffer("grad_energy", torch.zeros(0), persistent=False)

    def initialize(self, weight: torch.Tensor) -> None:
        if self.init == "random":
            order = torch.randperm(NUM_CODEWORDS, generator=torch.Generator().manual_seed(self.seed))
        else:
            order = frequency_order(weight)
        reference = (kmedoids_selection(weight, self.n, init=order[: self.n], max_kernels=self.max_kernels)
                     if self.exact else order[: self.n])
        if self.init == "kmedoids":
            order = reference
        self.selector.initialize(order)
        self.reference = reference.to(self.selector.selected.device)
        self.grad_energy = weight.new_zeros(0)

    def codewords(self) -> torch.Tensor:
        codewords = self.selector()
        return tangent_gradient(codewords) if self.tangent and codewords.requires_grad else codewords

    def _kernels(self, weight: torch.Tensor) -> torch.Tensor:
        energy = self.grad_energy if self.weighting == "grad" and self.grad_energy.numel() else None
        kernels = scaled_kernels(weight, None if energy is None else energy / energy.mean().clamp_min(1e-30))
        return sample_rows(kernels, self.max_kernels, seed=self.step_count())

    def _realign(self, old: torch.Tensor, new: torch.Tensor, rejected: torch.Tensor | None = None) -> None:
        """Scores follow the selection: a row that switched swaps its two scores; a vetoed proposal drops by κ."""
        scores = self.selector.scores.data
        for row in (old != new).nonzero().flatten().tolist():
            a, c = int(old[row]), int(new[row])
            scores[row, a], scores[row, c] = scores[row, c].clone(), scores[row, a].clone()
        if rejected is not None:
            for row in ((rejected != new) & (old == new)).nonzero().flatten().tolist():
                cur, c = int(new[row]), int(rejected[row])
                scores[row, c] = torch.minimum(scores[row, c], scores[row, cur] - self.selector.switch_margin)

    def _accept(self, weight: torch.Tensor):
        def accept(current: torch.Tensor, proposed: torch.Tensor) -> torch.Tensor:
            chosen = accept_swaps(self._kernels(weight), current, proposed, self.min_gain)
            self._realign(current, chosen, proposed)
            return chosen
        return accept if self.exact else None

    @torch.no_grad()
    def reselect(self, weight: torch.Tensor) -> None:
        """Best-swap search from the current selection and from the tracked reference; keep the better one."""
        scores = self._kernels(weight) @ self.selector.codebook_t()
        old = self.selector.selected.clone()
        new, _ = best_swap_search(scores, old, rtol=self.min_gain)
        reference, _ = best_swap_search(scores, self.reference, rtol=self.min_gain)
        self.reference.copy_(reference)
        if coverage_value(scores, reference) > coverage_value(scores, new):
            new = align_rows(new, reference)
        self._realign(old, new)
        self.selector.switch_events += int((new != old).sum())
        self.selector.selected.copy_(new)

    @torch.no_grad()
    def sync(self, weight: torch.Tensor) -> None:
        self.selector.sync(self._accept(weight))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        training = self.training and torch.is_grad_enabled() and self.selector.scores.requires_grad
        if training:
            count = self.count_step()
            if self.exact and self.reselect_every and count % self.reselect_every == 0:
                self.reselect(weight)
            v = self.selector(self._accept(weight))
            v = tangent_gradient(v) if self.tangent else v
        else:
            v = self.codewords()
        out = gather_codewords(v, self.kernel_indices(weight, v).flatten()).reshape(weight.shape) + ste_clip(weight)
        if training and self.weighting == "grad":
            out.register_hook(self._record_grad)
        return out

    @torch.no_grad()
    def _record_grad(self, grad: torch.Tensor) -> None:
        energy = grad.square().sum(dim=(2, 3))
        if self.grad_energy.shape != energy.shape:
            self.grad_energy = energy.clone()
        else:
            self.grad_energy.mul_(0.99).add_(energy, alpha=0.01)
