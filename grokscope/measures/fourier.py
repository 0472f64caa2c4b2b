"""Fourier toolkit over Z_p (and over Z_p^* through the discrete logarithm). Pure functions, float64.

Layout (docs/measures.md, "Fourier toolkit"): the real orthonormal basis ``F`` over Z_p (p odd) is a [p, p] matrix whose
row 0 is the constant 1/sqrt(p) and whose rows 2k-1 and 2k are cos(w_k x) and sin(w_k x), w_k = 2 pi k / p,
each L2-normalised, for k = 1..(p-1)/2. ``F @ x`` gives the coefficients of a vector x indexed by residues;
``F.T @ coeffs`` inverts it (F is orthogonal).

Everything here is a function of tensors: no files, no plotting, no model code.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from grokscope.formula import is_prime

__all__ = [
    "abc_wave_components", "basis_index", "component_norms", "discrete_log", "discrete_log_basis",
    "discrete_log_basis_names", "fourier_basis", "fourier_basis_names", "fourier_transform", "fourier_transform_2d",
    "frequency_norms", "frequency_of_index", "inverse_fourier_transform", "is_prime", "n_frequencies", "primitive_root",
    "real_fourier_basis", "wave",
]


# --------------------------------------------------------------------------- the basis


def real_fourier_basis(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The real orthonormal Fourier basis over Z_n: [n, n], one basis vector per row.

    Row 0 is constant; rows 2k-1, 2k are cos / sin of frequency k for k = 1..ceil(n/2)-1; for even n the last
    row is the Nyquist cosine (-1)^x / sqrt(n) (its sine is identically zero).
    """
    return _real_fourier_basis(n).to(dtype).clone()


@functools.lru_cache(maxsize=32)
def _real_fourier_basis(n: int) -> Tensor:
    if n < 1:
        raise ValueError(f"basis size must be >= 1, got {n}")
    x = torch.arange(n, dtype=torch.float64)
    rows = [torch.full((n,), 1.0 / math.sqrt(n), dtype=torch.float64)]
    for k in range(1, (n + 1) // 2):
        angle = 2 * math.pi * k * x / n
        rows.append(torch.cos(angle) * math.sqrt(2.0 / n))
        rows.append(torch.sin(angle) * math.sqrt(2.0 / n))
    if n % 2 == 0 and n >= 2:
        rows.append(torch.cos(math.pi * x) / math.sqrt(n))
    return torch.stack(rows)


def fourier_basis(p: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The orthonormal real Fourier basis over Z_p for odd p >= 3: [p, p] (row 0 constant, rows 2k-1/2k cos/sin k)."""
    if p < 3 or p % 2 == 0:
        raise ValueError(f"the Fourier basis over Z_p needs an odd p >= 3, got {p}")
    return real_fourier_basis(p, dtype)


def n_frequencies(p: int) -> int:
    """Number of non-constant frequencies over Z_p for odd p: (p - 1) / 2."""
    return (p - 1) // 2


def fourier_basis_names(p: int) -> list[str]:
    """Names of the rows of :func:`fourier_basis`: ``["const", "cos 1", "sin 1", ..., "sin (p-1)/2"]``."""
    names = ["const"]
    for k in range(1, n_frequencies(p) + 1):
        names += [f"cos {k}", f"sin {k}"]
    return names


def basis_index(k: int, kind: str) -> int:
    """Row of frequency k's cosine (``kind="cos"``) or sine (``"sin"``) in :func:`fourier_basis`."""
    if k < 1:
        raise ValueError(f"frequency must be >= 1, got {k}")
    if kind == "cos":
        return 2 * k - 1
    if kind == "sin":
        return 2 * k
    raise ValueError(f"kind must be 'cos' or 'sin', got {kind!r}")


def frequency_of_index(i: int) -> int:
    """Frequency of basis row i (0 for the constant): ceil(i / 2)."""
    return (i + 1) // 2


def wave(p: int, k: int, kind: str = "cos", shift: float = 0.0) -> Tensor:
    """cos or sin(w_k x + shift) for x = 0..p-1 (not normalised): [p] float64."""
    x = torch.arange(p, dtype=torch.float64)
    angle = 2 * math.pi * k * x / p + shift
    return torch.cos(angle) if kind == "cos" else torch.sin(angle)


# --------------------------------------------------------------------------- transforms


def _basis_for(x: Tensor, dim: int, basis: Tensor | None) -> Tensor:
    n = x.shape[dim]
    if basis is None:
        basis = fourier_basis(n)
    if basis.shape != (n, n):
        raise ValueError(f"axis {dim} has length {n}, but the basis is {tuple(basis.shape)}")
    return basis.to(device=x.device, dtype=torch.float64)


def fourier_transform(x: Tensor, dim: int = 0, basis: Tensor | None = None) -> Tensor:
    """Coefficients of ``x`` along axis ``dim`` (length p) in the basis (default :func:`fourier_basis`).

    Shape is preserved: axis ``dim`` now indexes basis rows instead of residues. Computed in float64.
    Example: ``fourier_transform(W_E[:p], dim=0)`` is ``F @ W_E[:p]`` [p, d_model].
    """
    basis = _basis_for(x, dim, basis)
    moved = x.to(torch.float64).movedim(dim, 0)
    out = torch.tensordot(basis, moved, dims=([1], [0]))
    return out.movedim(0, dim)


def inverse_fourier_transform(coeffs: Tensor, dim: int = 0, basis: Tensor | None = None) -> Tensor:
    """Inverse of :func:`fourier_transform` (the basis is orthogonal, so this applies its transpose)."""
    basis = _basis_for(coeffs, dim, basis)
    return fourier_transform(coeffs, dim=dim, basis=basis.T.contiguous())


def fourier_transform_2d(x: Tensor, basis: Tensor | None = None) -> Tensor:
    """2D transform of a table over (a, b): x [p, p, ...] -> F x F^T over the first two axes, [p, p, ...]."""
    return fourier_transform(fourier_transform(x, dim=0, basis=basis), dim=1, basis=basis)


def component_norms(x: Tensor, dim: int = 0) -> Tensor:
    """L2 norm of each basis component of x along axis ``dim`` (taken over every other axis): [p].

    Example: ``component_norms(W_E[:p], 0)`` gives the p row norms of ``F @ W_E[:p]``.
    """
    coeffs = fourier_transform(x, dim=dim).movedim(dim, 0)
    return coeffs.reshape(coeffs.shape[0], -1).norm(dim=1)


def frequency_norms(x: Tensor, dim: int = 0) -> Tensor:
    """Per-frequency norm sqrt(||cos_k||^2 + ||sin_k||^2) along axis ``dim`` (length odd p): [(p-1)/2], k = 1..(p-1)/2.

    The constant component is not included (see :func:`component_norms` for it).
    """
    comps = component_norms(x, dim)
    return torch.sqrt(comps[1::2] ** 2 + comps[2::2] ** 2)


def abc_wave_components(logits: Tensor, p: int | None = None) -> tuple[Tensor, Tensor]:
    """Components of a logit table along the unit-normalised cos(w_k(a+b-c)) and sin(w_k(a+b-c)) over Z_p^3.

    ``logits``: [p, p, p] indexed (a, b, c), or [p*p, p] with rows in row-major (a, b) order.
    Returns ``(cos_coef, sin_coef)``, each [(p-1)/2] for k = 1..(p-1)/2: the inner products <L, c_hat_k>
    with c_hat_k = cos(w_k(a+b-c)) / ||cos(w_k(a+b-c))|| (norm sqrt(p^3 / 2)). The OLS coefficient of the
    unnormalised wave is ``cos_coef[k-1] * sqrt(2 / p^3)``.
    """
    if logits.dim() == 3:
        p = logits.shape[0]
        table = logits.reshape(p * p, p)
    else:
        p = p or logits.shape[1]
        table = logits
    if table.shape != (p * p, p):
        raise ValueError(f"expected a logit table [p*p, p] or [p, p, p] for p={p}, got {tuple(logits.shape)}")
    table = table.to(torch.float64)
    idx = torch.arange(p * p)
    s = (idx // p + idx % p) % p  # a + b
    d = (s[:, None] - torch.arange(p)[None, :]) % p  # a + b - c, [p*p, p]
    g = torch.zeros(p, dtype=torch.float64).index_add_(0, d.reshape(-1), table.reshape(-1))
    # sum over the cube of L * cos(w_k (a+b-c)) = sum_d g[d] cos(w_k d); normalise by sqrt(p^3/2).
    k = torch.arange(1, n_frequencies(p) + 1, dtype=torch.float64)
    angle = 2 * math.pi * k[:, None] * torch.arange(p, dtype=torch.float64)[None, :] / p
    scale = math.sqrt(2.0 / p**3)
    return (torch.cos(angle) @ g) * scale, (torch.sin(angle) @ g) * scale


# --------------------------------------------------------------------------- Z_p^*: discrete logarithm


def _prime_factors(n: int) -> list[int]:
    out, d = [], 2
    while d * d <= n:
        if n % d == 0:
            out.append(d)
            while n % d == 0:
                n //= d
        d += 1
    if n > 1:
        out.append(n)
    return out


def primitive_root(p: int) -> int:
    """The smallest generator of the cyclic group Z_p^* (p prime): e.g. 3 for 113, 5 for 97."""
    if not is_prime(p):
        raise ValueError(f"Z_p^* is cyclic of order p-1 only for prime p; {p} is not prime")
    if p == 2:
        return 1
    factors = _prime_factors(p - 1)
    for g in range(2, p):
        if all(pow(g, (p - 1) // q, p) != 1 for q in factors):
            return g
    raise AssertionError("unreachable: every prime has a primitive root")


def discrete_log(p: int, g: int | None = None) -> Tensor:
    """log_g(a) for a = 0..p-1 as an int64 tensor [p]; entry 0 is -1 (0 has no logarithm).

    ``g`` defaults to :func:`primitive_root`; a given g must generate Z_p^*.
    """
    g = primitive_root(p) if g is None else g
    log = torch.full((p,), -1, dtype=torch.int64)
    x = 1
    for i in range(p - 1):
        if log[x] != -1:
            raise ValueError(f"{g} is not a generator of Z_{p}^* (its order is {i})")
        log[x] = i
        x = x * g % p
    return log


def discrete_log_basis(p: int, g: int | None = None, dtype: torch.dtype = torch.float64) -> Tensor:
    """Real orthonormal Fourier basis over Z_p^* in discrete-log coordinates: [p-1, p-1].

    Column j is the token a = j + 1 (tokens 1..p-1; token 0 is handled separately, since a*0 = 0).
    Row r evaluated at a is ``real_fourier_basis(p-1)[r, log_g(a)]``: the constant, cos/sin of frequency k
    for k = 1..(p-1)/2 - 1, and one Nyquist cosine. Multiplication by b acts on it as a shift by log_g(b)
    of Z_{p-1}, so this basis block-diagonalises multiplication (2x2 rotations, 1x1 signs).
    """
    log = discrete_log(p, g)
    base = real_fourier_basis(p - 1, dtype)
    return base[:, log[1:]]


def discrete_log_basis_names(p: int) -> list[str]:
    """Names of the rows of :func:`discrete_log_basis` (``const``, ``cos 1``, ``sin 1``, ..., ``nyquist``)."""
    n = p - 1
    names = ["const"]
    for k in range(1, (n + 1) // 2):
        names += [f"cos {k}", f"sin {k}"]
    if n % 2 == 0 and n >= 2:
        names.append("nyquist")
    return names
