import itertools

import pytest
import torch

from sparks.core.codebook import (
    NUM_CODEWORDS,
    codeword_frequencies,
    full_codebook,
    index_to_kernel,
    kernel_to_index,
    nearest_codeword,
)


def test_index_convention_hand_cases():
    # bit i set <=> row-major position i is +1 (SNN's convention)
    assert torch.equal(index_to_kernel(0), -torch.ones(3, 3))
    assert torch.equal(index_to_kernel(511), torch.ones(3, 3))
    k = index_to_kernel(1 + 4 + 256)  # positions 0, 2 and 8
    expected = -torch.ones(3, 3)
    expected[0, 0] = expected[0, 2] = expected[2, 2] = 1
    assert torch.equal(k, expected)


def test_full_codebook_round_trip_and_distinct():
    book = full_codebook()
    assert book.shape == (NUM_CODEWORDS, 9)
    assert set(book.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(kernel_to_index(book.reshape(-1, 3, 3)), torch.arange(NUM_CODEWORDS))
    assert torch.equal(index_to_kernel(torch.arange(NUM_CODEWORDS)).reshape(-1, 9), book)


def test_index_out_of_range():
    with pytest.raises(ValueError, match="0..511"):
        index_to_kernel(512)


def test_nearest_codeword_matches_brute_force_l2():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(7, 5, 3, 3, generator=g, dtype=torch.float64)
    codewords = full_codebook(torch.float64)[torch.randperm(512, generator=g)[:12]]
    got = nearest_codeword(weight, codewords)
    for o, i in itertools.product(range(7), range(5)):
        dists = ((codewords - weight[o, i].reshape(9)) ** 2).sum(1)
        assert got[o, i] == dists.argmin()
    # with the full codebook the nearest codeword is the sign pattern
    assert torch.equal(full_codebook(torch.float64)[nearest_codeword(weight, full_codebook())].reshape(weight.shape),
                       torch.where(weight >= 0, 1.0, -1.0).double())


def test_codeword_frequencies_counts():
    kernels = torch.stack([index_to_kernel(3), index_to_kernel(3), index_to_kernel(500)]).unsqueeze(0)
    counts = codeword_frequencies(kernels * 0.3)
    assert counts[3] == 2 and counts[500] == 1 and counts.sum() == 3
