"""ebm's dropout (ebm.energies.dropout): masks from 16-bit quarters of random words, checked
against the definition of inverted dropout with exact binomial and contingency tests (scipy)."""

from __future__ import annotations

import pytest
import torch
from scipy import stats
from torch import nn

from ebm.energies import DROPOUT_BITS, Dropout, dropout, mlp

N = 1_000_000


def keep_probability(p: float) -> float:
    """κ = round((1 − p) 2^16) / 2^16: the mask's exact keep probability."""
    return round((1 - p) * 2**DROPOUT_BITS) / 2**DROPOUT_BITS


@pytest.mark.parametrize("p", [0.05, 0.13, 0.3, 0.5, 0.9])
def test_the_mask_keeps_each_element_with_probability_one_minus_p(p):
    torch.manual_seed(0)
    out = dropout(torch.ones(N // 250, 250), p)
    kept = int((out != 0).sum())
    assert abs(keep_probability(p) - (1 - p)) <= 2.0 ** -(DROPOUT_BITS + 1)
    assert stats.binomtest(kept, N, keep_probability(p)).pvalue > 1e-4
    # a kept element is x / κ exactly: the output is unbiased, E[out] = x
    assert torch.equal(out[out != 0], torch.full((kept,), 1 / keep_probability(p)))
    assert stats.ttest_1samp(out.flatten().double().numpy(), 1.0).pvalue > 1e-4


@pytest.mark.parametrize("width", [7, 250])
def test_neighbouring_elements_are_independent(width):
    """Elements from the same random word (4 per word) and from neighbouring words: a 2×2
    contingency table of (m_i, m_{i+1}) shows no dependence, at every offset within a word."""
    torch.manual_seed(1)
    kept = dropout(torch.ones(N // width, width), 0.5) != 0
    for offset in range(min(width - 1, 4)):
        a, b = kept[:, offset].long(), kept[:, offset + 1].long()
        table = torch.zeros(2, 2, dtype=torch.long)
        table.index_put_((a, b), torch.ones_like(a), accumulate=True)
        assert stats.chi2_contingency(table.numpy()).pvalue > 1e-4


def test_the_gradient_is_the_same_mask():
    torch.manual_seed(2)
    x = torch.randn(64, 256, requires_grad=True)
    out = dropout(x, 0.2)
    out.backward(torch.ones_like(out))
    mask = out.detach() / x.detach()
    assert torch.allclose(x.grad, mask)
    assert set(x.grad.unique().tolist()) == {0.0, torch.tensor(1 / keep_probability(0.2)).item()}


def test_identity_zeros_and_refusals():
    x = torch.randn(8, 5)
    assert dropout(x, 0.0) is x
    assert dropout(x, 0.4, training=False) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="dropout probability"):
            dropout(x, p)


def test_a_seeded_draw_repeats_and_moves_the_default_generator():
    torch.manual_seed(3)
    first, second = dropout(torch.ones(64, 128), 0.3), dropout(torch.ones(64, 128), 0.3)
    torch.manual_seed(3)
    assert torch.equal(dropout(torch.ones(64, 128), 0.3), first)
    assert not torch.equal(first, second)


def test_under_vmap_members_draw_their_own_masks():
    """A stacked step (ebm.stacking) vmaps the trunk: under randomness="different" each member
    gets its own mask, under "same" every member the unbatched call's."""
    from torch.func import vmap

    x = torch.ones(5, 64, 128)
    torch.manual_seed(4)
    different = vmap(lambda v: dropout(v, 0.3), randomness="different")(x)
    assert all(not torch.equal(different[0], different[s]) for s in range(1, 5))
    rates = (different != 0).double().mean(dim=(1, 2))
    assert torch.allclose(rates, torch.full((5,), keep_probability(0.3), dtype=torch.double), atol=0.02)
    torch.manual_seed(4)
    same = vmap(lambda v: dropout(v, 0.3), randomness="same")(x)
    torch.manual_seed(4)
    alone = dropout(torch.ones(64, 128), 0.3)
    assert all(torch.equal(same[s], alone) for s in range(5))


def test_mlp_blocks_use_it_and_eval_mode_turns_it_off():
    net = mlp(10, 32, 2, dropout=0.25)
    layers = [layer for layer in net if isinstance(layer, nn.Dropout)]
    assert len(layers) == 2 and all(isinstance(layer, Dropout) and layer.p == 0.25 for layer in layers)
    x = torch.randn(16, 10)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    torch.manual_seed(5)
    assert not torch.equal(net(x), net(x))
