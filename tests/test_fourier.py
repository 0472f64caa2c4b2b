"""Fourier toolkit: closed forms over Z_p and the discrete-log basis over Z_p^*."""

import math

import pytest
import torch

from grokscope.measures.fourier import (
    abc_wave_components,
    basis_index,
    component_norms,
    discrete_log,
    discrete_log_basis,
    discrete_log_basis_names,
    fourier_basis,
    fourier_basis_names,
    fourier_transform,
    fourier_transform_2d,
    frequency_norms,
    frequency_of_index,
    inverse_fourier_transform,
    primitive_root,
    real_fourier_basis,
)

EYE = lambda n: torch.eye(n, dtype=torch.float64)  # noqa: E731


@pytest.mark.parametrize("p", [3, 7, 13, 23])
def test_basis_orthonormal_and_layout(p):
    F = fourier_basis(p)
    assert F.shape == (p, p) and F.dtype == torch.float64
    assert torch.allclose(F @ F.T, EYE(p), atol=1e-12)
    x = torch.arange(p, dtype=torch.float64)
    assert torch.allclose(F[0], torch.full((p,), 1 / math.sqrt(p), dtype=torch.float64))
    for k in range(1, (p - 1) // 2 + 1):
        cos = torch.cos(2 * math.pi * k * x / p)
        sin = torch.sin(2 * math.pi * k * x / p)
        assert torch.allclose(F[basis_index(k, "cos")], cos / cos.norm(), atol=1e-12)
        assert torch.allclose(F[basis_index(k, "sin")], sin / sin.norm(), atol=1e-12)
        assert frequency_of_index(basis_index(k, "sin")) == k
    names = fourier_basis_names(p)
    assert names[0] == "const" and names[1] == "cos 1" and names[2] == "sin 1" and len(names) == p


@pytest.mark.parametrize("n", [2, 6, 12])
def test_even_basis_has_nyquist_and_is_orthonormal(n):
    B = real_fourier_basis(n)
    assert torch.allclose(B @ B.T, EYE(n), atol=1e-12)
    assert torch.allclose(B[-1].abs(), torch.full((n,), 1 / math.sqrt(n), dtype=torch.float64))


def test_even_p_rejected():
    with pytest.raises(ValueError):
        fourier_basis(10)


def test_transform_along_axis_and_inverse():
    p, d = 11, 5
    W = torch.randn(d, p, dtype=torch.float64)
    F = fourier_basis(p)
    assert torch.allclose(fourier_transform(W, dim=1), (F @ W.T).T)
    assert torch.allclose(fourier_transform(W.T, dim=0), F @ W.T)
    assert torch.allclose(inverse_fourier_transform(fourier_transform(W, dim=1), dim=1), W)
    # Parseval: the basis is orthonormal.
    assert torch.allclose(component_norms(W, dim=1).norm(), W.norm())


def test_frequency_norms_of_a_pure_wave():
    p, k = 13, 4
    x = torch.arange(p, dtype=torch.float64)
    v = 3 * torch.cos(2 * math.pi * k * x / p + 0.7)  # any phase
    norms = frequency_norms(v, dim=0)
    assert norms.shape == ((p - 1) // 2,)
    assert norms[k - 1] == pytest.approx(v.norm().item())
    assert torch.all(norms[torch.arange(len(norms)) != k - 1] < 1e-10)


def test_2d_transform_of_cos_a_plus_b_lives_in_the_product_block():
    p, k = 11, 3
    a = torch.arange(p, dtype=torch.float64)
    table = torch.cos(2 * math.pi * k * (a[:, None] + a[None, :]) / p)
    coef = fourier_transform_2d(table)
    block = torch.zeros(p, p, dtype=torch.bool)
    idx = torch.tensor([2 * k - 1, 2 * k])
    block[idx[:, None], idx[None, :]] = True
    assert coef[~block].abs().max() < 1e-10
    # cos(a+b) = cos a cos b - sin a sin b: (B_cc - B_ss) * p / sqrt(2) * ... ; energy preserved
    assert coef[block].norm() == pytest.approx(table.norm().item())
    assert coef[2 * k - 1, 2 * k - 1] == pytest.approx(-coef[2 * k, 2 * k].item())


def test_abc_wave_components_recover_chosen_coefficients():
    p = 13
    idx = torch.arange(p * p)
    s = ((idx // p + idx % p) % p).to(torch.float64)
    c = torch.arange(p, dtype=torch.float64)
    alphas = {2: 1.5, 5: -0.5}
    table = sum(al * torch.cos(2 * math.pi * k * (s[:, None] - c[None, :]) / p) for k, al in alphas.items())
    table = table + 0.3 * torch.sin(2 * math.pi * 4 * (s[:, None] - c[None, :]) / p)
    cos_c, sin_c = abc_wave_components(table, p)
    expect_cos = torch.zeros((p - 1) // 2, dtype=torch.float64)
    for k, al in alphas.items():
        expect_cos[k - 1] = al * math.sqrt(p**3 / 2)
    assert torch.allclose(cos_c, expect_cos, atol=1e-9)
    assert sin_c[3] == pytest.approx(0.3 * math.sqrt(p**3 / 2))
    assert torch.allclose(sin_c[torch.arange(6) != 3], torch.zeros(5, dtype=torch.float64), atol=1e-9)
    # the [p, p, p] form gives the same numbers
    cos3, _ = abc_wave_components(table.reshape(p, p, p))
    assert torch.allclose(cos3, cos_c)


@pytest.mark.parametrize("p,g", [(7, 3), (13, 2), (23, 5), (97, 5), (113, 3)])
def test_primitive_root(p, g):
    assert primitive_root(p) == g
    log = discrete_log(p)
    assert log[0] == -1
    for a in range(1, p):
        assert pow(g, int(log[a]), p) == a


def test_primitive_root_rejects_composite_and_non_generator():
    with pytest.raises(ValueError):
        primitive_root(15)
    with pytest.raises(ValueError):
        discrete_log(7, g=2)  # 2 has order 3 mod 7


@pytest.mark.parametrize("p", [7, 13])
def test_discrete_log_basis_block_diagonalises_multiplication(p):
    B = discrete_log_basis(p)  # [p-1, p-1], column j = token j + 1
    n = p - 1
    assert torch.allclose(B @ B.T, EYE(n), atol=1e-12)
    assert len(discrete_log_basis_names(p)) == n
    log = discrete_log(p)
    # Block structure: const | (cos k, sin k) pairs | nyquist.
    blocks = [[0]] + [[2 * k - 1, 2 * k] for k in range(1, n // 2)] + [[n - 1]]
    in_block = torch.zeros(n, n, dtype=torch.bool)
    for blk in blocks:
        t = torch.tensor(blk)
        in_block[t[:, None], t[None, :]] = True
    F_add = fourier_basis(p)[:, 1:]  # additive basis restricted to tokens 1..p-1 (for contrast)
    off_add = 0.0
    for b in range(2, p):
        # (M_b f)(a) = f(a * b mod p) on tokens 1..p-1
        M = torch.zeros(n, n, dtype=torch.float64)
        for a in range(1, p):
            M[a - 1, (a * b) % p - 1] = 1.0
        D = B @ M @ B.T
        assert D[~in_block].abs().max() < 1e-10, f"multiplication by {b} mixes frequencies"
        for k in range(1, n // 2):
            blk = D[2 * k - 1 : 2 * k + 1, 2 * k - 1 : 2 * k + 1]
            angle = 2 * math.pi * k * int(log[b]) / n
            rot = torch.tensor(
                [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=torch.float64
            )
            assert torch.allclose(blk, rot, atol=1e-10) or torch.allclose(blk, rot.T, atol=1e-10)
        A = (F_add @ M @ F_add.T)[1:, 1:]  # [p-1, p-1]: the additive frequencies' rows/columns
        off_add = max(off_add, float(A[~in_block].abs().max()))
    assert off_add > 0.1  # the additive basis does not do it
