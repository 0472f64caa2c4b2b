"""Group bases: the relabelling under which a modular task is addition in a cyclic group Z_n, found from the task's
table, and the real Fourier toolkit over Z_n for any n (odd or even) that the analysis runs in that basis.

A :class:`GroupBasis` lists the tokens of operand a (``a_order``), of operand b (``b_order``) and the output
classes (``c_order``) that stand for the group elements 0..n-1, so that on the group's inputs
``table[a_order[i], b_order[j]] == c_order[(i + j) % n]`` (``exact``). Two kinds (docs/measures/bases.md):

- ``"additive"`` (n = p): t(a, b) = f(a) + h(b) mod p with f, h bijections of Z_p (a+b, a-b, 2a+3b+1, a^3+b when
  gcd(3, p-1) = 1); a_order = f^-1, b_order = h^-1, c_order = identity.
- ``"dlog"`` (n = p - 1, p prime): t(a, b) + c = F(a) H(b) mod p with F, H bijections from the residues other than
  one zero a0 (b0) onto Z_p^* (a*b, a/b, 3ab, ab+a+b = (a+1)(b+1) - 1 with c = 1); with g the smallest primitive
  root, a_order[i] = F^-1(g^i), b_order[j] = H^-1(g^j), c_order[m] = g^m - c. The inputs a = a0 or b = b0 (and
  the output -c) are outside the group.

A sum f(a) + h(b) (or a product) whose f is not a bijection (a^2 + b) gets its output's basis with ``exact``
False: the answer is a sum in Z_p, so the logit measures are exact in it, but f collapses inputs, so the embedding
of a is not a wave in any relabelling; a collapsing operand keeps the plain order (tokens 0..p-1, or g^i around
its zero). Any other table gets no basis (``None`` and the reason).

Shapes: tables [p, p] int64 (row a, column b; -1 where the task has no such pair); orders [n] int64. The Fourier
helpers take the length-n group axis: frequencies k = 1..n//2, where for even n the last one (n/2, the Nyquist
frequency) has a cosine (-1)^x and no sine. Pure functions; no model code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from grokscope.formula import is_prime, parse_formula
from grokscope.measures import names
from grokscope.measures.fourier import fourier_transform, primitive_root, real_fourier_basis
from grokscope.measures.grid import MeasureError, cross_entropy

__all__ = [
    "BASIS_NAMES", "GroupBasis", "additive_basis", "basis_table", "checked_group_keys", "detect_basis",
    "dlog_basis", "formula_table", "frequency_rows", "group_basis_for", "group_block_fractions",
    "group_component_norms", "group_frequency_norms", "group_inverse_2d", "group_label_wave_fit", "group_neuron_energy",
    "group_restricted_excluded", "group_rows", "group_transform", "group_transform_2d", "identity_basis", "is_identity",
    "n_group_frequencies",
    "task_basis",
]

BASIS_NAMES = ("additive", "dlog")


@dataclass(frozen=True, eq=False)
class GroupBasis:
    """The relabelling of a task onto Z_n (module docstring). ``generator``: g of Z_p^* (dlog); ``shift``: c, the
    basis is that of t + c; ``outside``: the inputs (and outputs) the group leaves out, None when none; ``why``: the
    reason, in words; ``exact``: the identity holds on every group input (False: only the output side is a basis)."""

    name: str
    n: int
    a_order: Tensor  # [n] int64 token of group element i as operand a
    b_order: Tensor  # [n] int64 token of group element j as operand b
    c_order: Tensor  # [n] int64 output class of group element m
    generator: int | None
    shift: int
    outside: str | None
    why: str
    exact: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: name, n, generator, shift, outside, why, exact and the three orders as lists."""
        return {"name": self.name, "n": self.n, "generator": self.generator, "shift": self.shift,
                "outside": self.outside, "why": self.why, "exact": self.exact, "a_order": self.a_order.tolist(),
                "b_order": self.b_order.tolist(), "c_order": self.c_order.tolist()}


def is_identity(basis: GroupBasis, p: int) -> bool:
    """Whether ``basis`` is the plain additive basis over Z_p: every order is 0..p-1 (the existing analysis)."""
    ident = torch.arange(p)
    return basis.name == "additive" and basis.n == p and all(
        torch.equal(o, ident) for o in (basis.a_order, basis.b_order, basis.c_order))


def identity_basis(p: int, why: str) -> GroupBasis:
    """The additive basis of the tokens (every order 0..p-1), not exact: the answer's labels drive the logit
    measures."""
    ident = torch.arange(p)
    return GroupBasis("additive", p, ident, ident.clone(), ident.clone(), None, 0, None, why, exact=False)


# ----------------------------------------------------------------------------- detection from the table


def basis_table(task: Any) -> Tensor:
    """The task's answers over the p x p grid: [p, p] int64, row a, column b, -1 for a pair the task leaves out."""
    p = task.p
    table = torch.full((p * p,), -1, dtype=torch.int64)
    table[task.pair_index.cpu()] = task.labels.cpu().to(torch.int64)
    return table.reshape(p, p)


def formula_table(formula: str, p: int) -> Tensor:
    """A formula evaluated on the p x p grid: [p, p] int64 (row a, column b), -1 where it has no value
    (b = 0 in a/b)."""
    a, b = torch.arange(p).repeat_interleave(p), torch.arange(p).repeat(p)
    values, valid = parse_formula(formula).evaluate(a, b, p)
    return torch.where(valid, values, torch.full_like(values, -1)).reshape(p, p)


def _inverse(f: Tensor, p: int) -> Tensor | None:
    """f^-1 as [p] int64 for a bijection f [p] of Z_p, else None."""
    if torch.unique(f).numel() != f.numel():
        return None
    inv = torch.empty(p, dtype=torch.int64)
    inv[f] = torch.arange(p)
    return inv


def _linear(alpha: int, beta: int, gamma: int) -> str:
    """'a + b', '2a + 52b + 1': the linear form alpha a + beta b + gamma in words."""
    terms = [f"{'' if alpha == 1 else alpha}a", f"{'' if beta == 1 else beta}b"] + ([str(gamma)] if gamma else [])
    return " + ".join(terms)


def additive_basis(table: Tensor, p: int) -> GroupBasis | None:
    """The additive basis if t = f(a) + h(b) mod p on the full grid (``exact`` when f and h are
    bijections), else None."""
    if bool((table < 0).any()):
        return None
    f, h = (table[:, 0] - table[0, 0]) % p, table[0, :] % p
    if not bool(((table - f[:, None] - h[None, :]) % p == 0).all()):
        return None
    f_inv, h_inv = _inverse(f, p), _inverse(h, p)
    ident = torch.arange(p)
    alpha, beta, gamma = int(f[1]) if p > 1 else 1, (int(h[1]) - int(h[0])) % p if p > 1 else 1, int(h[0])
    linear = torch.equal(f, alpha * ident % p) and torch.equal(h, (beta * ident + gamma) % p)
    form = f"t = {_linear(alpha, beta, gamma)} mod p" if linear else "t = f(a) + h(b) mod p"
    if f_inv is not None and h_inv is not None:
        why = (f"{form} with {'alpha, beta units' if linear else 'f, h bijections of Z_p'}: relabelling a by f(a) and "
               "b by h(b) makes the task addition in Z_p, whose characters are the additive Fourier waves")
        return GroupBasis("additive", p, f_inv, h_inv, ident, None, 0, None, why)
    collapsed = [name for name, inv in (("f(a)", f_inv), ("h(b)", h_inv)) if inv is None]
    why = (f"{form}, but {' and '.join(collapsed)} is not a bijection of Z_p: the answer is a sum in Z_p, so the "
           "output's additive basis is the answer's (restricted/excluded loss, the logit fit and W_L are exact in it); "
           "a collapsing operand has no relabelling in which its embedding is a wave, so it is read in token order")
    return GroupBasis("additive", p, ident if f_inv is None else f_inv, ident if h_inv is None else h_inv, ident,
                      None, 0, None, why, exact=False)


def _zero_line(tc: Tensor, dim: int) -> list[int]:
    """Rows (dim 1) or columns (dim 0) whose defined entries are all 0 (or that have none)."""
    return torch.nonzero(((tc == 0) | (tc < 0)).all(dim=dim)).reshape(-1).tolist()


def _product_factors(table: Tensor, p: int, c: int) -> tuple[int, int, Tensor, Tensor] | None:
    """(a0, b0, F, H) with t + c = F(a) H(b) mod p off the zero row a0 and column b0, else None."""
    tc = torch.where(table >= 0, (table + c) % p, table)
    rows, cols = _zero_line(tc, 1), _zero_line(tc, 0)
    if len(rows) != 1 or len(cols) != 1:
        return None
    a0, b0 = rows[0], cols[0]
    keep_a, keep_b = torch.arange(p) != a0, torch.arange(p) != b0
    inner = tc[keep_a][:, keep_b]
    if bool((inner <= 0).any()):
        return None
    a1, b1 = (a0 + 1) % p, (b0 + 1) % p
    f = tc[:, b1].clone()
    h = tc[a1, :] * pow(int(tc[a1, b1]), -1, p) % p
    f[a0], h[b0] = 0, 0
    if not bool(((f[:, None] * h[None, :] - tc) % p == 0)[keep_a][:, keep_b].all()):
        return None
    return a0, b0, f, h


def dlog_basis(table: Tensor, p: int, g: int | None = None) -> GroupBasis | None:
    """The discrete-log basis if t + c = F(a) H(b) over Z_p^* for some shift c = 0..p-1 (the first exact one; else the
    first with a collapsing F or H, ``exact`` False), else None. Needs p prime (Z_p^* cyclic)."""
    if not is_prime(p) or p < 3:
        return None
    g = primitive_root(p) if g is None else g
    powers = torch.tensor([pow(g, i, p) for i in range(p - 1)], dtype=torch.int64)
    partial = None
    for c in range(p):
        found = _product_factors(table, p, c)
        if found is None:
            continue
        a0, b0, f, h = found
        f_inv, h_inv = _inverse(f, p), _inverse(h, p)
        a_order = (a0 + powers) % p if f_inv is None else f_inv[powers]
        b_order = (b0 + powers) % p if h_inv is None else h_inv[powers]
        c_order = (powers - c) % p
        undefined = bool((table[:, b0] < 0).all())
        outside = (f"a = {a0} or b = {b0} (" + (f"t = {-c % p}" if not undefined else
                   f"t = {-c % p} for a = {a0}; no answer for b = {b0}") + "), outside the group")
        form = "t" if c == 0 else f"t + {c}"
        if f_inv is not None and h_inv is not None:
            why = (f"{form} = F(a) H(b) mod p with F, H bijections onto Z_p^* off a = {a0}, b = {b0}: {form} is "
                   f"multiplication in Z_p^*, cyclic of order p-1 = {p - 1} with generator g = {g}; its discrete "
                   f"logarithm makes the task addition in Z_{p - 1}")
            return GroupBasis("dlog", p - 1, a_order, b_order, c_order, g, c, outside, why)
        if partial is None:
            collapsed = [name for name, inv in (("F(a)", f_inv), ("H(b)", h_inv)) if inv is None]
            why = (f"{form} = F(a) H(b) mod p, but {' and '.join(collapsed)} is not a bijection onto Z_p^*: the answer "
                   "is a product, so the output's discrete-log basis is the answer's; a collapsing operand has no "
                   "relabelling in which its embedding is a wave, so it is read as g^i in token order")
            partial = GroupBasis("dlog", p - 1, a_order, b_order, c_order, g, c, outside, why, exact=False)
    return partial


def detect_basis(table: Tensor, p: int) -> tuple[GroupBasis | None, str]:
    """The task's group basis from its table [p, p] (module docstring): the exact additive basis, else the exact
    discrete-log one, else a collapsing sum's or product's output basis; (None, the reason) for anything else."""
    add = additive_basis(table, p)
    if add is not None and add.exact:
        return add, add.why
    log = dlog_basis(table, p)
    if log is not None and (log.exact or add is None):
        return log, log.why
    if add is not None:
        return add, add.why
    why = ("t is neither a sum f(a) + h(b) mod p nor, for any shift c, a product t + c = F(a) H(b) over Z_p^*"
           + ("" if is_prime(p) else " (p is not prime, so Z_p^* is not cyclic)")
           + ": no cyclic group relabels it; the analysis reads it in the additive basis of tokens and answers")
    return None, why


def group_basis_for(table: Tensor, p: int, name: str | None = None) -> tuple[GroupBasis | None, str]:
    """The basis the analysis uses: :func:`detect_basis`, or the named one (``"additive"`` or ``"dlog"``) when given.
    A named basis the table does not have is the plain one of the tokens (``exact`` False, the reason says so);
    :class:`MeasureError` when it cannot apply (dlog for a non-prime p, or group inputs whose answer is outside)."""
    if name is None:
        return detect_basis(table, p)
    if name not in BASIS_NAMES:
        raise MeasureError(f"unknown basis {name!r}; known: {', '.join(BASIS_NAMES)}")
    found = additive_basis(table, p) if name == "additive" else dlog_basis(table, p)
    if found is not None:
        return found, f"{found.why} (asked for: {name})"
    if name == "additive":
        why = "asked for: additive; t is not a sum f(a) + h(b) mod p, so the basis is the tokens' own order"
        return identity_basis(p, why), why
    if not is_prime(p):
        raise MeasureError(f"the discrete-log basis needs a prime p (Z_p^* cyclic), got p={p}")
    g = primitive_root(p)
    powers = torch.tensor([pow(g, i, p) for i in range(p - 1)], dtype=torch.int64)
    sub = table[powers][:, powers]
    if bool((sub <= 0).any()):
        bad = int((sub <= 0).sum())
        raise MeasureError(f"--basis dlog: {bad} inputs with a, b != 0 have no answer in Z_p^* (t = 0 or none), so "
                           "the discrete-log grid cannot score them")
    why = (f"asked for: dlog; t is not a product over Z_p^*, so the basis is g^i (g = {g}) for tokens and answers "
           "alike (a = 0, b = 0 and the output 0 outside)")
    basis = GroupBasis("dlog", p - 1, powers, powers.clone(), powers.clone(), g, 0, "a = 0 or b = 0, outside the "
                       "group", why, exact=False)
    return basis, why


def task_basis(task: Any, name: str | None = None) -> tuple[GroupBasis | None, str]:
    """:func:`group_basis_for` of a modular task's table (:func:`basis_table`); MeasureError for another kind."""
    kind = getattr(getattr(task, "config", None), "kind", None)
    if kind != "modular" or not hasattr(task, "pair_index"):
        raise MeasureError(f"a group basis needs a modular task (task.kind='modular'), got kind {kind!r}")
    return group_basis_for(basis_table(task), task.p, name)


# ----------------------------------------------------------------------------- Fourier over Z_n, any n


def n_group_frequencies(n: int) -> int:
    """Frequencies over Z_n: k = 1..n//2 ((n-1)/2 cos/sin pairs for odd n; for even n also the Nyquist n/2)."""
    return n // 2


def frequency_rows(k: int, n: int) -> list[int]:
    """Rows of :func:`~grokscope.measures.real_fourier_basis` (n) that carry frequency k: [2k-1, 2k], or [n-1] for the
    Nyquist frequency k = n/2 of an even n."""
    if not 1 <= k <= n // 2:
        raise ValueError(f"frequency must be in 1..{n // 2} for n={n}, got {k}")
    return [n - 1] if 2 * k == n else [2 * k - 1, 2 * k]


def checked_group_keys(freqs: Iterable[int], n: int) -> list[int]:
    """A given key set over Z_n, sorted and without repeats; :class:`MeasureError` unless each is in 1..n//2."""
    keys = sorted({int(k) for k in freqs})
    bad = [k for k in keys if not 1 <= k <= n // 2]
    if bad:
        raise MeasureError(f"key frequencies must be in 1..{n // 2} for the group Z_{n}, got {bad}")
    return keys


def group_transform(x: Tensor, dim: int = 0) -> Tensor:
    """Coefficients of x along axis ``dim`` (length n, any n) in ``real_fourier_basis(n)``; shape kept, float64."""
    return fourier_transform(x, dim=dim, basis=real_fourier_basis(x.shape[dim]))


def group_transform_2d(x: Tensor) -> Tensor:
    """F x F^T over the first two axes of x [n, n, ...] (any n)."""
    return group_transform(group_transform(x, 0), 1)


def group_inverse_2d(coef: Tensor) -> Tensor:
    """Inverse of :func:`group_transform_2d`: F^T c F over the first two axes of [n, n, ...]."""
    basis_t = real_fourier_basis(coef.shape[0]).T.contiguous().to(coef.device)
    return fourier_transform(fourier_transform(coef, 0, basis_t), 1, basis_t)


def group_component_norms(x: Tensor, dim: int = 0) -> Tensor:
    """[n]: the L2 norm of each basis component of x along axis ``dim`` (over every other axis)."""
    coeffs = group_transform(x, dim).movedim(dim, 0)
    return coeffs.reshape(coeffs.shape[0], -1).norm(dim=1)


def _pair_norms(comps: Tensor) -> Tensor:
    n = comps.shape[0]
    m = (n - 1) // 2
    pairs = torch.sqrt(comps[1 : 2 * m + 1 : 2] ** 2 + comps[2 : 2 * m + 1 : 2] ** 2)
    return torch.cat([pairs, comps[n - 1 :].abs()]) if n % 2 == 0 and n >= 2 else pairs


def group_frequency_norms(x: Tensor, dim: int = 0) -> Tensor:
    """[n//2]: per-frequency norm sqrt(cos_k^2 + sin_k^2) along axis ``dim`` (the Nyquist one: its cosine alone).
    For odd n the same numbers as :func:`~grokscope.measures.frequency_norms`."""
    return _pair_norms(group_component_norms(x, dim))


def group_neuron_energy(acts: Tensor, n: int) -> Tensor:
    """Squared 2D coefficients of each neuron over the n x n group grid, mean component zeroed: [n, n, d_mlp]."""
    energy = group_transform_2d(acts.to(torch.float64).reshape(n, n, -1)) ** 2
    energy[0, 0] = 0.0
    return energy


def _harmonic(k: int, n: int) -> int:
    """The frequency (0..n//2) of 2k mod n."""
    return min(2 * k % n, n - 2 * k % n)


def group_block_fractions(energy: Tensor, n: int, *, quadratic: bool) -> Tensor:
    """Per frequency k = 1..n//2, each neuron's share of its energy [n, n, d] in the block of (const, cos k, sin k) in
    both inputs (the Nyquist: (const, its cosine)); ``quadratic`` adds the harmonic 2k on each input alone:
    [n//2, d]."""
    total = energy.sum(dim=(0, 1))
    fracs = []
    for k in range(1, n // 2 + 1):
        idx = torch.tensor([0, *frequency_rows(k, n)], device=energy.device)
        e = energy[idx][:, idx].sum(dim=(0, 1))
        j = _harmonic(k, n)
        if quadratic and j not in (0, k):
            hj = torch.tensor(frequency_rows(j, n), device=energy.device)
            e = e + energy[0, hj].sum(dim=0) + energy[hj, 0].sum(dim=0)
        fracs.append(e)
    block = torch.stack(fracs)
    return torch.where(total > 0, block / total.clamp_min(1e-300), torch.zeros_like(block))


# ----------------------------------------------------------------------------- restricted / excluded over Z_n


def _label_design(n: int, freqs: Iterable[int], device: torch.device | None = None) -> Tensor:
    """[n, 1 + #directions]: 1, cos(w_k s), sin(w_k s) for each k at labels s = 0..n-1 (the Nyquist: its cosine)."""
    s = torch.arange(n, dtype=torch.float64, device=device)
    cols = [torch.ones(n, dtype=torch.float64, device=device)]
    for k in freqs:
        cols.append(torch.cos(2 * math.pi * k * s / n))
        if 2 * k != n:
            cols.append(torch.sin(2 * math.pi * k * s / n))
    return torch.stack(cols, dim=1)


def group_label_wave_fit(table: Tensor, labels: Tensor, n: int, freqs: Iterable[int]) -> tuple[Tensor, Tensor]:
    """Least-squares fit of every logit column of ``table`` [N, n] (labels [N] in 0..n-1) on the waves of the answer,
    as :func:`~grokscope.measures.label_wave_fit` over Z_n: returns ``(const, key)``, each [n, n] indexed by label."""
    x = _label_design(n, list(freqs), table.device)
    counts = torch.bincount(labels, minlength=n).to(torch.float64)
    sums = torch.zeros(n, table.shape[1], dtype=torch.float64, device=table.device)
    sums = sums.index_add_(0, labels, table.to(torch.float64))
    beta = torch.linalg.solve(x.T @ (counts[:, None] * x), x.T @ sums)
    return x[:, :1] @ beta[:1], x[:, 1:] @ beta[1:]


def _per_label_scores(rows: Tensor, counts: Tensor) -> tuple[float, float]:
    s = torch.arange(rows.shape[0], device=rows.device)
    ce = -F.log_softmax(rows.to(torch.float64), dim=-1)[s, s]
    hit = (rows.argmax(dim=-1) == s).to(torch.float64)
    return float((counts * ce).sum() / counts.sum()), float((counts * hit).sum() / counts.sum())


def group_restricted_excluded(table: Tensor, labels: Tensor, train_rows: Tensor, n: int, freqs: list[int]
                              ) -> dict[str, float]:
    """Restricted loss/acc (all group inputs), excluded loss/acc and excluded_loss_k{K} (train rows ``train_rows``) of
    a group logit table [N, n] with labels [N]: :func:`~grokscope.measures.restricted_excluded` over Z_n."""
    const, key = group_label_wave_fit(table, labels, n, freqs)
    counts = torch.bincount(labels, minlength=n).to(torch.float64)
    out: dict[str, float] = {}
    out[names.RESTRICTED_LOSS], out[names.RESTRICTED_ACC] = _per_label_scores(const + key, counts)
    tr_labels, tr_table = labels[train_rows], table[train_rows]
    out[names.EXCLUDED_LOSS], out[names.EXCLUDED_ACC] = cross_entropy(tr_table - key[tr_labels], tr_labels)
    for k in freqs:
        _, key_k = group_label_wave_fit(table, labels, n, [k])
        out[names.excluded_loss_k(k)], _ = cross_entropy(tr_table - key_k[tr_labels], tr_labels)
    return out


def group_rows(task: Any, basis: GroupBasis) -> tuple[Tensor, Tensor, Tensor]:
    """The task rows of the n x n group grid (row i*n + j is a = a_order[i], b = b_order[j]) [n*n], their labels in
    0..n-1 [n*n], and the positions in that grid of the training rows that lie in the group [n_train_in]."""
    p, n = task.p, basis.n
    dev = task.pair_index.device
    lookup = torch.full((p * p,), -1, dtype=torch.int64, device=dev)
    lookup[task.pair_index] = torch.arange(task.pair_index.shape[0], device=dev)
    rows = lookup[(basis.a_order[:, None] * p + basis.b_order[None, :]).reshape(-1).to(dev)]
    if bool((rows < 0).any()):
        raise MeasureError(f"{int((rows < 0).sum())} inputs of the {basis.name} group grid are not in the task")
    c_index = torch.full((p,), -1, dtype=torch.int64, device=dev)
    c_index[basis.c_order.to(dev)] = torch.arange(n, device=dev)
    labels = c_index[task.labels[rows]]
    if bool((labels < 0).any()):
        raise MeasureError(f"{int((labels < 0).sum())} inputs of the {basis.name} group grid have answers outside "
                           "the group's outputs")
    position = torch.full((task.labels.shape[0],), -1, dtype=torch.int64, device=dev)
    position[rows] = torch.arange(n * n, device=dev)
    train = position[task.train_idx]
    return rows, labels, train[train >= 0]
