"""The irreducible representations of S5, the group's analogue of the Fourier basis (Chughtai et al. 2023, "A toy
model of universality").

Elements are the 120 permutations of {0..4} in lexicographic order (token i of the ``s5`` task), with
(x*y)(i) = x(y(i)). The seven irreps are real and orthogonal, named by their partitions:

========== ===== =================================================================================
name       dim   construction
========== ===== =================================================================================
``[5]``    1     trivial
``[1^5]``  1     sign
``[4,1]``  4     standard: the permutation matrices on the sum-zero subspace of R^5
``[2,1^3]`` 4    standard x sign
``[3,2]``  5     the isotypic part of standard (x) standard with character (chi^2 + chi(g^2)) / 2 - 1 - chi
``[2^2,1]`` 5    [3,2] x sign
``[3,1^2]`` 6    the exterior square of standard: character (chi^2 - chi(g^2)) / 2
========== ===== =================================================================================

The matrix elements sqrt(d / 120) rho(g)_ij of all seven form an orthonormal basis of the functions on S5
(sum of d^2 = 120): :func:`irrep_basis`. :func:`irrep_energy` splits a function's energy over the irreps,
:func:`project_irreps` keeps the part in chosen ones, :func:`character_table` gives chi_rho(x y^-1) for the
character-based ("GCR") logit fit. Pure math: tensors in, numbers out, float64.
"""

from __future__ import annotations

import functools
import itertools

import torch
from torch import Tensor

__all__ = [
    "IRREP_DIMS", "IRREP_NAMES", "S5_ORDER", "character_table", "irrep_basis", "irrep_energy", "permutation_matrices",
    "project_irreps", "s5_irreps",
]

S5_ORDER = 120
#: The irreps of S5 by partition, in the order every result lists them; dims 1, 1, 4, 4, 5, 5, 6.
IRREP_NAMES: tuple[str, ...] = ("[5]", "[1^5]", "[4,1]", "[2,1^3]", "[3,2]", "[2^2,1]", "[3,1^2]")
IRREP_DIMS: dict[str, int] = dict(zip(IRREP_NAMES, (1, 1, 4, 4, 5, 5, 6), strict=True))


def permutation_matrices() -> Tensor:
    """[120, 5, 5] float64: M[g] e_i = e_{g(i)}, so M[x] M[y] = M[x*y]; g in lexicographic order."""
    perms = torch.tensor(list(itertools.permutations(range(5))), dtype=torch.int64)  # [120, 5]
    out = torch.zeros(S5_ORDER, 5, 5, dtype=torch.float64)
    out[torch.arange(S5_ORDER)[:, None], perms, torch.arange(5)[None, :]] = 1.0
    return out


def _unit_eigvecs(projector: Tensor, dim: int, what: str) -> Tensor:
    """[D, dim]: an orthonormal basis of the image of the orthogonal projector [D, D] (eigenvalue 1)."""
    vals, vecs = torch.linalg.eigh(projector)
    keep = vals > 0.5
    if int(keep.sum()) != dim:
        raise AssertionError(f"{what}: image of dimension {int(keep.sum())}, expected {dim}")
    return vecs[:, keep]


def _isotypic(rep: Tensor, chi: Tensor, dim: int, what: str) -> Tensor:
    """The irrep with character ``chi`` [120] inside the orthogonal rep ``rep`` [120, D, D] where it occurs once:
    P = dim/120 sum_g chi(g) rep(g) projects onto it; returns Q^T rep Q [120, dim, dim]."""
    projector = dim / S5_ORDER * torch.einsum("g,gij->ij", chi, rep)
    q = _unit_eigvecs((projector + projector.T) / 2, dim, what)
    return q.T @ rep @ q


@functools.lru_cache(maxsize=1)
def _irreps() -> tuple[Tensor, ...]:
    perm = permutation_matrices()
    sign = torch.linalg.det(perm).round()[:, None, None]  # [120, 1, 1]
    centre = torch.eye(5, dtype=torch.float64) - 1.0 / 5
    h = _unit_eigvecs(centre, 4, "sum-zero subspace")  # [5, 4]
    std = h.T @ perm @ h  # [120, 4, 4]
    tensor = torch.einsum("gij,gkl->gikjl", std, std).reshape(S5_ORDER, 16, 16)
    chi = torch.einsum("gii->g", std)
    chi_sq = torch.einsum("gij,gji->g", std, std)  # chi(g^2)
    r32 = _isotypic(tensor, (chi**2 + chi_sq) / 2 - 1 - chi, 5, "[3,2]")
    r311 = _isotypic(tensor, (chi**2 - chi_sq) / 2, 6, "[3,1^2]")
    trivial = torch.ones(S5_ORDER, 1, 1, dtype=torch.float64)
    return trivial, sign, std, std * sign, r32, r32 * sign, r311


def s5_irreps() -> dict[str, Tensor]:
    """The seven irreps of S5: name -> [120, d, d] float64 orthogonal matrices rho(g), g lexicographic."""
    return {name: rho.clone() for name, rho in zip(IRREP_NAMES, _irreps(), strict=True)}


@functools.lru_cache(maxsize=1)
def _basis() -> tuple[Tensor, Tensor]:
    rows, labels = [], []
    for i, rho in enumerate(_irreps()):
        d = rho.shape[1]
        rows.append((d / S5_ORDER) ** 0.5 * rho.reshape(S5_ORDER, d * d).T)  # [d^2, 120]
        labels.append(torch.full((d * d,), i, dtype=torch.int64))
    return torch.cat(rows), torch.cat(labels)


def irrep_basis() -> tuple[Tensor, Tensor]:
    """(B, labels): B [120, 120] float64 with orthonormal rows sqrt(d/120) rho(g)_ij (row: one (rho, i, j), column:
    g), irreps in :data:`IRREP_NAMES` order; labels [120] int64, the index of each row's irrep in that order."""
    b, labels = _basis()
    return b.clone(), labels.clone()


def irrep_energy(f: Tensor) -> dict[str, float]:
    """Fraction of ||f||^2 in each irrep's matrix-element space, for f [120, m] (m functions on S5 as columns: an
    embedding W_E[:120] or W_U^T) or [120]. All zeros for f = 0. The fractions sum to 1."""
    b, labels = _basis()
    f = f.detach().to(torch.float64).reshape(S5_ORDER, -1)
    per_row = ((b @ f) ** 2).sum(dim=1)  # [120]
    total = float(per_row.sum())
    energy = torch.zeros(len(IRREP_NAMES), dtype=torch.float64).index_add_(0, labels, per_row)
    return {name: (float(e) / total if total > 0 else 0.0) for name, e in zip(IRREP_NAMES, energy, strict=True)}


def project_irreps(f: Tensor, names: list[str] | tuple[str, ...], dim: int = 0) -> Tensor:
    """The part of ``f`` in the irreps ``names``, with S5 along axis ``dim`` (size 120): for logits [N, 120] over the
    output c, ``dim=-1`` projects every row. Same shape as ``f``, float64."""
    b, labels = _basis()
    unknown = [n for n in names if n not in IRREP_NAMES]
    if unknown:
        raise ValueError(f"unknown irreps {unknown}; known: {list(IRREP_NAMES)}")
    keep = torch.isin(labels, torch.tensor([IRREP_NAMES.index(n) for n in names], dtype=torch.int64))
    bk = b[keep]  # [n_k, 120]
    moved = f.detach().to(torch.float64).movedim(dim, -1)
    return (moved @ bk.T @ bk).movedim(-1, dim)


def character_table(name: str) -> Tensor:
    """[120, 120] float64: entry (x, y) = chi_rho(x y^-1) = tr(rho(x) rho(y)^T) for the irrep ``name``."""
    rho = s5_irreps()[name]
    v = rho.reshape(S5_ORDER, -1)
    return v @ v.T
