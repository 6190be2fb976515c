"""The SNN baseline (Wang et al., ICCV 2021) as its public step-2 code does it; registered as method ``snn``."""

from __future__ import annotations

import torch
from torch import nn

from sparks.core.codebook import CODE_LENGTH, NUM_CODEWORDS, full_codebook, kernel_to_index
from sparks.core.methods import StepCounter, WeightMethod, register_method


@register_method("snn")
class SNNCodewords(StepCounter, WeightMethod):
    """SNN baseline as yikaiw/SNN's step-2 code does it (``Binarize`` in step2/modules/binarize.py).

    * Real codeword proxies C (n × 9), started at n distinct codewords drawn at random, a different draw per layer
      (SNN samples from Python's global RNG per layer; here each layer draws its own seed from torch's global RNG,
      which the training loop seeds with ``--seed``, so runs stay reproducible).
    * Forward V = sign(C), keeping the previous sign where |C| < ``memory_eps`` (binary memory), written
      ``sign + (C − stopgrad C)`` only on update steps, so the forward is exactly ±1.
    * Update steps: every ``refine_every``-th training forward, C receives the summed gradient of the kernels assigned
      to each codeword (identity straight-through); on the other steps it receives an all-zero gradient, which is
      what PyTorch 1.4's in-place ``zero_grad`` gave SNN's Adam (its moments keep moving C in between).
    * After each update step's forward, duplicate rows (after sign) are dropped, the survivors kept in order and
      random unused codewords appended; then C is clamped to [−``clamp``, ``clamp``].
    * C trains at the model learning rate, like the network weights (``own_learning_rate = False``).
    """

    def __init__(self, tau: int, seed: int = 0, refine_every: int = 25, memory_eps: float = 1e-3,
                 clamp: float = 3.0, **kwargs: object) -> None:
        super().__init__(tau, **kwargs)
        self.refine_every = refine_every
        self.memory_eps = memory_eps
        self.clamp = clamp
        self.proxies = nn.Parameter(torch.zeros(self.n, CODE_LENGTH))
        self.register_buffer("memory", torch.ones(self.n, CODE_LENGTH))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))  # counted by StepCounter, no sync
        # Per-layer seed: the run's global RNG stream (distinct per layer) mixed with ``seed``.
        layer_seed = int(torch.randint(0, 2**31 - 1, ())) + 1_000_003 * int(seed)
        self.register_buffer("layer_seed", torch.tensor(layer_seed, dtype=torch.int64))

    def _generator(self, offset: int) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.layer_seed) + offset)

    def initialize(self, weight: torch.Tensor) -> None:
        chosen = torch.randperm(NUM_CODEWORDS, generator=self._generator(0))[: self.n]
        with torch.no_grad():
            self.proxies.copy_(full_codebook()[chosen].to(self.proxies.device))
            self.memory.copy_(self.proxies)
            self.steps.zero_()
        self._host_steps = 0

    @torch.no_grad()
    def _update_memory(self, only_on_change: bool = True) -> None:
        """memory = sign(C) where |C| ≥ ``memory_eps``; written only on change, so eval caches stay valid (training
        passes ``only_on_change=False``: the comparison would sync a GPU, and no cache is read there)."""
        sign = torch.where(self.proxies >= 0, 1.0, -1.0)
        new = torch.where(self.proxies.abs() < self.memory_eps, self.memory, sign)
        if not only_on_change or not torch.equal(new, self.memory):
            self.memory.copy_(new)

    @torch.no_grad()
    def refine(self) -> None:
        """Drop duplicate codewords (after sign), append random unused ones, clamp the proxies (SNN's
        ``check_conpensate_patterns``)."""
        indices = kernel_to_index(self.proxies.reshape(self.n, 3, 3)).tolist()
        seen: set[int] = set()
        keep = []
        for row, index in enumerate(indices):
            if index not in seen:
                keep.append(row)
            seen.add(index)
        if len(keep) < self.n:
            draw = torch.randperm(NUM_CODEWORDS, generator=self._generator(self.step_count())).tolist()
            unused = [i for i in draw if i not in seen][: self.n - len(keep)]
            book = full_codebook().to(self.proxies.device)
            self.proxies.data = torch.cat([self.proxies.data[keep], book[unused]])
        self.proxies.clamp_(-self.clamp, self.clamp)

    def codewords(self) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled()):
            self._update_memory()  # SNN's forward refreshes the memory from C (eval included)
            return self.memory
        self._update_memory(only_on_change=False)
        step = self.count_step()  # no sync: only an update step reads the device (refine's duplicate search)
        straight_through = self.proxies - self.proxies.detach()
        if step % self.refine_every:
            if step < self.refine_every and not _distributed():
                # before its first update SNN's proxies have no gradient (Adam skips them); under DDP every
                # parameter must take part in each backward, so there they get the all-zero gradient instead
                return self.memory
            return self.memory + 0.0 * straight_through  # exactly ±1; an all-zero gradient, see the class doc
        codewords = self.memory + straight_through
        self.refine()  # after the graph is built, as SNN does: this step's gradient lands on the refined rows
        return codewords


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()
