"""Batched exact assignment: same answers as scipy per layer / brute force, and one host transfer for k layers.

The sync-count harness is a CPU stand-in for ``torch.cuda.set_sync_debug_mode``: it counts every call that would
move data from the device to the host (``.item()``, ``.cpu()``, ``.tolist()``, ``.numpy()``, ``bool/int/float()`` of a
tensor) and every scipy ``linear_sum_assignment`` call during one training step of a small Sparks model.
"""

from __future__ import annotations

import itertools
from collections import Counter
from contextlib import contextmanager

import pytest
import torch

import sparks.core.assignment as assignment
import sparks.core.selection as selection
from sparks.core.assignment import batched_assignment, refresh_selections
from sparks.core.layers import subbit_layers
from sparks.core.selection import GumbelSinkhornSelector, hungarian, pste
from sparks.models import create

NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
SYNC_METHODS = ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__")


@contextmanager
def count_host_syncs(monkeypatch: pytest.MonkeyPatch):
    """Counter of device→host calls (by method name) and scipy assignments ("lsa") inside the block."""
    counts: Counter = Counter()
    for name in SYNC_METHODS:
        original = getattr(torch.Tensor, name)

        def wrapped(self, *args, _original=original, _name=name, **kwargs):
            counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    for module in (selection, assignment):
        lsa = module.linear_sum_assignment

        def counted(*args, _lsa=lsa, **kwargs):
            counts["lsa"] += 1
            return _lsa(*args, **kwargs)

        monkeypatch.setattr(module, "linear_sum_assignment", counted)
    try:
        yield counts
    finally:
        monkeypatch.undo()


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on the shared 2-core machine parallel regions wait for descheduled threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def brute_force(scores: torch.Tensor) -> float:
    """The maximum total score over all injective row→column maps (tiny matrices only)."""
    r, c = scores.shape
    return max(sum(float(scores[i, cols[i]]) for i in range(r)) for cols in itertools.permutations(range(c), r))


def test_batched_assignment_matches_brute_force_and_scipy():
    g = torch.Generator().manual_seed(0)
    small = [torch.randn(r, 5, generator=g) for r in (1, 3, 5, 4)]  # ragged rows: padded internally
    for m, cols in zip(small, batched_assignment(small), strict=True):
        assert len(set(cols.tolist())) == m.shape[0]
        got = float(m.double()[torch.arange(m.shape[0]), cols].sum())
        assert got == pytest.approx(brute_force(m.double()), abs=1e-9)
    big = [torch.randn(32, 512, generator=g) for _ in range(6)]
    for m, cols in zip(big, batched_assignment(big), strict=True):
        assert torch.equal(cols, hungarian(m))
        assert cols.dtype == torch.int64 and cols.shape == (32,)


def test_batched_assignment_refuses_bad_shapes():
    with pytest.raises(ValueError, match="no score matrices"):
        batched_assignment([])
    with pytest.raises(ValueError, match="one column count"):
        batched_assignment([torch.zeros(2, 5), torch.zeros(2, 6)])
    with pytest.raises(ValueError, match="at most as many rows"):
        batched_assignment([torch.zeros(6, 5)])


def test_refresh_is_the_selector_read_off_and_a_fixed_point():
    g = torch.Generator().manual_seed(1)
    items = []
    for _ in range(5):
        scores = torch.randn(16, 512, generator=g) * 0.3
        selected = torch.randperm(512, generator=g)[:16]
        items.append((scores, selected, 0.5))
    expected = []
    for scores, selected, margin in items:  # the read-off of GumbelSinkhornSelector.forward, one layer at a time
        biased = scores.clone()
        biased[torch.arange(16), selected] += margin
        expected.append(hungarian(biased))
    new = refresh_selections(items)
    for (_, selected, _), exp, got in zip(items, expected, new, strict=True):
        assert torch.equal(got, exp) and torch.equal(selected, exp)  # written in place
    again = refresh_selections(items, write=False)
    for a, b in zip(new, again, strict=True):
        assert torch.equal(a, b)


def one_step(model, x, y, refresh: bool):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    with torch.no_grad():  # stand-in for optimizer.step(): every parameter, the scores included, moves
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(1.0 * p.grad.sign())
                p.grad = None
    if refresh:
        selectors = [layer.quantizer.selector for _, layer in subbit_layers(model)]
        refresh_selections([(s.scores, s.selected, s.switch_margin) for s in selectors])


def forward_without_read_off(self, accept=None):
    """GumbelSinkhornSelector.forward once the refresh is wired in: the hard selection is the refreshed buffer."""
    if not (self.training and torch.is_grad_enabled() and self.scores.requires_grad):
        return self._codebook[self.selected]
    return pste(self.soft_permutation() @ self._codebook, self._codebook[self.selected])


def selections(model) -> dict[str, torch.Tensor]:
    return {name: layer.quantizer.selector.selected.clone() for name, layer in subbit_layers(model)}


def test_one_training_step_uses_one_host_transfer_for_all_layers(monkeypatch):
    x, y = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(0)
    model = create("resnet18_cifar", width=0.125, tau=5, method="sparks", exact=False, noise=0.0).train()
    k = len(list(subbit_layers(model)))
    start = selections(model)

    # Today: the selector solves one assignment per layer in its forward, each with its own transfer.
    with count_host_syncs(monkeypatch) as per_layer:
        one_step(model, x, y, refresh=False)
    assert per_layer["lsa"] == k and per_layer["cpu"] == k and per_layer["numpy"] == k
    one_step(model, x, y, refresh=False)
    model(x)  # the read-off that step 3 would do
    old = selections(model)
    old_params = [p.detach().clone() for p in model.parameters()]

    # Batched: the forward uses the selection refreshed after the previous step; one refresh solves all k layers
    # with one transfer (.cpu() of the stack, then .numpy() of that host copy) and nothing else syncs.
    monkeypatch.setattr(GumbelSinkhornSelector, "forward", forward_without_read_off)
    torch.manual_seed(0)
    model = create("resnet18_cifar", width=0.125, tau=5, method="sparks", exact=False, noise=0.0).train()
    with count_host_syncs(monkeypatch) as batched:
        one_step(model, x, y, refresh=True)
    assert batched["lsa"] == k
    assert batched["cpu"] == 1 and batched["numpy"] == 1 and sum(batched.values()) == k + 2, batched
    monkeypatch.setattr(GumbelSinkhornSelector, "forward", forward_without_read_off)
    one_step(model, x, y, refresh=True)
    new = selections(model)
    # Same training trajectory: refreshing after the step gives what the next forward would have read off.
    assert sum(int((old[n] != start[n]).sum()) for n in old) > 0  # some codewords did switch
    for name in old:
        assert torch.equal(new[name], old[name]), name
    for a, b in zip(old_params, model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_snn_training_step_syncs_only_on_update_steps(monkeypatch):
    """SNN counts its steps on the host: a step between updates reads nothing back (nor compares tensors); an update
    step reads each layer's proxies once (the duplicate search of the refill)."""
    x, y = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(0)
    model = create("resnet18_cifar", width=0.125, tau=5, method="snn", refine_every=3).train()
    k = len(list(subbit_layers(model)))
    one_step(model, x, y, refresh=False)
    equal, compared = torch.equal, Counter()
    for update in (False, True):  # steps 2 and 3: between updates, then an update
        compared.clear()
        with count_host_syncs(monkeypatch) as counts:
            monkeypatch.setattr(torch, "equal", lambda *a: compared.update(["equal"]) or equal(*a))
            one_step(model, x, y, refresh=False)
        assert compared["equal"] == 0, compared
        assert dict(counts) == ({"tolist": k} if update else {}), counts


@pytest.mark.cuda
@NEEDS_CUDA
def test_cuda_training_step_syncs_once(monkeypatch):
    """On a GPU, torch's own sync detector sees one synchronising call per step: the batched transfer."""
    import warnings

    device = torch.device("cuda")
    monkeypatch.setattr(GumbelSinkhornSelector, "forward", forward_without_read_off)
    torch.manual_seed(0)
    model = create("resnet18_cifar", width=0.25, tau=5, method="sparks").to(device).train()
    x = torch.randn(8, 3, 32, 32, device=device)
    y = torch.arange(8, device=device) % 10
    one_step(model, x, y, refresh=True)  # warm-up (allocations, pinned-memory cache)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            one_step(model, x, y, refresh=True)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    # torch also warns once that the sync detector is a prototype: that line names no synchronising call
    syncs = [w for w in caught if "called a synchronizing" in str(w.message).lower()]
    assert len(syncs) == 1, [str(w.message) for w in syncs]
