"""f-divergences: conjugacy against a numerical sup, derivatives, the float32 guard, the entmax limits (acceptance 6)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.optimize import minimize_scalar

from ebm.divergences import LOG_MAX_SLOPE, entmax, entmax15, get_divergence, kl, sparsemax

ALL = [kl, sparsemax, entmax15, entmax(1.2)]


@pytest.mark.parametrize("divergence", ALL, ids=lambda d: d.name)
def test_normalisation_f_of_one_and_conjugate_at_zero(divergence):
    one, zero = torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64)
    assert abs(divergence.f(one).item()) < 1e-12
    assert abs(divergence.conjugate(zero).item()) < 1e-12
    assert abs(divergence.conjugate_grad(zero).item() - 1) < 1e-12


@pytest.mark.parametrize("divergence", ALL, ids=lambda d: d.name)
def test_conjugate_is_the_numerical_supremum(divergence):
    """f*(s) = sup_{t ≥ 0} s·t − f(t), computed independently by a bounded 1-D maximisation."""
    for s in (-3.0, -1.5, -0.5, 0.0, 0.4, 1.0, 2.5):
        result = minimize_scalar(
            lambda t: -(s * t - divergence.f(torch.tensor([t], dtype=torch.float64)).item()),
            bounds=(0.0, 50.0),
            method="bounded",
            options={"xatol": 1e-10},
        )
        value = divergence.conjugate(torch.tensor([s], dtype=torch.float64)).item()
        assert value == pytest.approx(-result.fun, abs=1e-6), (divergence.name, s)
        # the maximiser is (f*)'(s) = the density ratio p/q
        assert divergence.conjugate_grad(torch.tensor([s], dtype=torch.float64)).item() == pytest.approx(result.x, abs=1e-4)


@pytest.mark.parametrize("divergence", ALL, ids=lambda d: d.name)
def test_conjugate_grad_is_the_derivative(divergence):
    s = torch.linspace(-4, 4, 41, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(divergence.conjugate(s).sum(), s)
    assert torch.allclose(grad, divergence.conjugate_grad(s.detach()), atol=1e-10)


def test_kl_conjugate_guard_against_float32_overflow():
    """Beyond s₀ = 40 the kl conjugate is its tangent: finite loss, positive gradient, C¹, convex."""
    s = torch.tensor([100.0, 1e4, 1e20], requires_grad=True)
    value = kl.conjugate(s)
    (grad,) = torch.autograd.grad(value.sum(), s)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all() and (grad > 0).all()
    assert torch.expm1(torch.tensor(100.0)).isinf()  # the unguarded formula would overflow
    # C¹ at the threshold: one-sided slopes agree; convex: second differences are ≥ 0 there
    s0, h = LOG_MAX_SLOPE, 1e-3
    points = torch.tensor([s0 - 2 * h, s0 - h, s0, s0 + h, s0 + 2 * h], dtype=torch.float64)
    values = kl.conjugate(points)
    left, right = (values[2] - values[1]) / h, (values[3] - values[2]) / h
    assert left.item() == pytest.approx(right.item(), rel=1e-2)
    assert (values[:-2] - 2 * values[1:-1] + values[2:] >= -1e-6 * values.abs().max()).all()
    # below the threshold it is exactly eˢ − 1
    assert kl.conjugate(torch.tensor([39.0], dtype=torch.float64)).item() == pytest.approx(math.expm1(39.0), rel=1e-12)


def test_entmax_conjugates_stay_finite_for_huge_inputs():
    for divergence in (entmax(1.001), entmax15, sparsemax):
        s = torch.tensor([1e6, 1e15, 1e20], requires_grad=True)
        value = divergence.conjugate(s)
        (grad,) = torch.autograd.grad(value.sum(), s)
        assert torch.isfinite(value).all() and (grad > 0).all(), divergence.name


def test_entmax_limits_acceptance_6():
    """α = 1.001 agrees with kl up to O((α − 1)·s²·eˢ); α = 2 is sparsemax to float64 precision."""
    s = torch.linspace(-3, 3, 61, dtype=torch.float64)
    t = torch.linspace(0, 4, 41, dtype=torch.float64)
    near_kl = entmax(1.001)
    assert torch.allclose(near_kl.conjugate(s), kl.conjugate(s), rtol=1e-2, atol=1e-3)
    assert torch.allclose(near_kl.conjugate_grad(s), kl.conjugate_grad(s), rtol=1e-2)
    assert torch.allclose(near_kl.f(t), kl.f(t), atol=1e-2)
    at_two = entmax(2.0)
    for name in ("f", "conjugate", "conjugate_grad"):
        arg = t if name == "f" else s
        assert torch.allclose(getattr(at_two, name)(arg), getattr(sparsemax, name)(arg), rtol=0, atol=1e-12), name
    # and the agreement with kl improves as α → 1 (the limit, not a coincidence)
    errors = [(entmax(a).conjugate(s) - kl.conjugate(s)).abs().max().item() for a in (1.1, 1.01, 1.001)]
    assert errors[0] > errors[1] > errors[2]


def test_sparsemax_and_entmax_ratios_are_sparse():
    s = torch.tensor([-5.0, -1.0, 0.0, 1.0])
    assert torch.equal(sparsemax.conjugate_grad(s), torch.tensor([0.0, 0.0, 1.0, 2.0]))
    assert entmax15.conjugate_grad(torch.tensor([-2.0, -3.0])).eq(0).all()  # [1 + s/2]₊² = 0 for s ≤ −2
    assert (kl.conjugate_grad(s) > 0).all()


def test_get_divergence_names():
    assert get_divergence("kl") is kl and get_divergence("logistic") is kl
    assert get_divergence("entmax15") is entmax15
    assert get_divergence("entmax:1.3").name == "entmax1.3"
    with pytest.raises(ValueError, match="did you mean 'sparsemax'"):
        get_divergence("sparsmax")
    with pytest.raises(ValueError, match=r"\(1, 2\]"):
        get_divergence("entmax:2.5")
    with pytest.raises(ValueError, match="alpha"):
        get_divergence("entmax:abc")


def test_weighted_conjugate_guards_the_terms_size_not_the_margin():
    """w·f*(s) for importance-weighted draws: the value w(eˢ − 1) (and for sparsemax w·f*(s)) where
    nothing is guarded; for kl at s = 60, log w = −55 (a draw at log p/q ≈ 60 from a model-informed
    proposal, k = 174) its s-gradient is w eˢ = e⁵ exactly, where guarding s alone gives w e⁴⁰ = e⁻¹⁵."""
    from ebm.divergences import get_divergence, weighted_conjugate, weighted_slope

    kl = get_divergence("kl")
    s = torch.tensor([-3.0, 0.0, 2.5], dtype=torch.float64, requires_grad=True)
    log_w = torch.tensor([0.7, -1.2, 2.0], dtype=torch.float64)
    value = weighted_conjugate(kl, s, log_w)
    assert torch.allclose(value, log_w.exp() * torch.expm1(s), rtol=1e-12)
    (grad,) = torch.autograd.grad(value.sum(), s)
    assert torch.allclose(grad, log_w.exp() * s.detach().exp(), rtol=1e-12)
    assert torch.allclose(weighted_slope(kl, s.detach(), log_w), grad, rtol=1e-12)
    sparsemax = get_divergence("sparsemax")
    assert torch.allclose(weighted_conjugate(sparsemax, s, log_w), log_w.exp() * sparsemax.conjugate(s))

    far = torch.tensor([60.0], requires_grad=True)  # float32, as in training
    (grad,) = torch.autograd.grad(weighted_conjugate(kl, far, torch.tensor([-55.0])).sum(), far)
    assert math.isclose(float(grad), math.exp(5.0), rel_tol=1e-4)
    (capped,) = torch.autograd.grad((kl.conjugate(far) * math.exp(-55.0)).sum(), far)
    assert float(capped) < 1e-6  # what guarding the margin alone gives


def test_entmax15_closed_form_equals_the_generic_entmax_at_one_point_five():
    """The polynomial α = 1.5 conjugate and ratio equal entmax(1.5)'s log1p/expm1 forms, guard included."""
    s = torch.cat([torch.linspace(-5, 5, 1001, dtype=torch.float64), torch.tensor([1e6, 1e12], dtype=torch.float64)])
    generic = entmax(1.5)
    torch.testing.assert_close(entmax15.conjugate(s), generic.conjugate(s), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(entmax15.conjugate_grad(s), generic.conjugate_grad(s), rtol=1e-12, atol=1e-12)
