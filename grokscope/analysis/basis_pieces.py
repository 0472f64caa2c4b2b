"""The pieces of the Section 4 analysis over a cyclic group Z_n of any order n (odd or even): the versions of
:mod:`grokscope.analysis.reverse`'s logit fit, 2D block masks, neuron polynomial fits, attention fits, star-plot data
and key-frequency rules that :mod:`grokscope.analysis.basis` runs on a model read in a task's group basis.

For odd n each computes what its additive counterpart computes over Z_p; for even n frequency n/2 (Nyquist) has a
cosine (-1)^x and no sine (:func:`~grokscope.measures.bases.frequency_rows`). Shapes: N = n*n group inputs in group
order (row i*n + j); tables [N, n] float64; activations [N, d_mlp]; W_E viewed [n, d_model], W_L viewed [d_mlp, n].
Pure: tensors in, numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from grokscope.analysis.reverse import HeadFit, LogitFit, StarNeuron
from grokscope.measures import (
    KEY_FREQ_RULES,
    NEURON_FVE_THRESHOLD,
    W_E_NORM_FRACTION,
    MeasureError,
    cross_entropy,
    key_frequencies_from_norms,
    key_frequencies_online,
)
from grokscope.measures.bases import (
    frequency_rows,
    group_block_fractions,
    group_component_norms,
    group_frequency_norms,
    group_inverse_2d,
    group_neuron_energy,
    group_transform,
    group_transform_2d,
)

__all__ = [
    "group_attention_fits", "group_block_mask_table", "group_ffs_fcr", "group_key_frequencies", "group_logit_fit",
    "group_neuron_polynomial_fits", "group_star_plot_data",
]


def group_logit_fit(table: Tensor, labels: Tensor, n: int, freqs: Iterable[int]) -> LogitFit:
    """Fit ``table`` [N, n] (labels [N]) by sum_k alpha_k cos(w_k(s_r - c)), w_k = 2 pi k / n, after subtracting each
    row's mean: :func:`~grokscope.analysis.logit_wave_fit` over Z_n. The waves are orthogonal, so alpha_k =
    <L, cos_k> / ||cos_k||^2 with ||cos_k||^2 = N n / 2 (N n for the Nyquist cosine, whose sine coefficient is 0)."""
    freqs = sorted(int(k) for k in freqs)
    rows = table.shape[0]
    centred = table - table.mean(dim=1, keepdim=True)
    d = (labels[:, None] - torch.arange(n)[None, :]) % n  # s - c
    g = torch.zeros(n, dtype=torch.float64).index_add_(0, d.reshape(-1), centred.reshape(-1))
    dd = torch.arange(n, dtype=torch.float64)
    alpha, sin_c = {}, {}
    fit = torch.zeros_like(centred)
    for k in freqs:
        norm_sq = rows * n / (1.0 if 2 * k == n else 2.0)
        cos_d, sin_d = torch.cos(2 * math.pi * k * dd / n), torch.sin(2 * math.pi * k * dd / n)
        alpha[k] = float(cos_d @ g) / norm_sq
        sin_c[k] = 0.0 if 2 * k == n else float(sin_d @ g) / norm_sq
        fit += alpha[k] * cos_d[d]
    total = float((centred**2).sum())
    fve = 1.0 - float(((centred - fit) ** 2).sum()) / total if total > 0 else float("nan")
    loss, acc = cross_entropy(fit, labels)
    return LogitFit(freqs, alpha, sin_c, fve, loss, acc)


def group_block_mask_table(table: Tensor, n: int, freqs: Iterable[int], *, product_only: bool) -> Tensor:
    """Keep the constant and each key k's block of a group table [N, ...] in the 2D basis over (i, j):
    {0, cos k, sin k}^2 (``product_only`` False) or {cos k, sin k}^2, the waves of i +- j (True)."""
    rest = table.shape[1:]
    coef = group_transform_2d(table.to(torch.float64).reshape(n, n, *rest))
    mask = torch.zeros(n, n, dtype=torch.float64)
    mask[0, 0] = 1.0
    for k in freqs:
        idx = torch.tensor(frequency_rows(k, n) if product_only else [0, *frequency_rows(k, n)])
        mask[idx[:, None], idx[None, :]] = 1.0
    return group_inverse_2d(coef * mask.reshape(n, n, *([1] * len(rest)))).reshape(n * n, *rest)


def group_neuron_polynomial_fits(acts: Tensor, n: int, freq: Tensor, explained: Tensor) -> Tensor:
    """Each explained neuron's activations [N, d_mlp] replaced by their projection on its frequency's block
    {0, cos k, sin k}^2 over (i, j); ``freq`` [d_mlp] in 1..n//2, ``explained`` [d_mlp] bool; others unchanged."""
    coef = group_transform_2d(acts.to(torch.float64).reshape(n, n, -1))
    mask = torch.zeros_like(coef)
    mask[0, 0] = 1.0
    for k in sorted(set(int(f) for f in freq[explained])):
        idx = torch.tensor([0, *frequency_rows(k, n)])
        sub = mask[idx[:, None], idx[None, :]]
        sub[..., (freq == k) & explained] = 1.0
        mask[idx[:, None], idx[None, :]] = sub
    fit = group_inverse_2d(coef * mask).reshape(n * n, -1)
    return torch.where(explained[None, :], fit, acts.to(torch.float64))


def group_attention_fits(patterns: list[Tensor], n: int) -> list[HeadFit]:
    """Per layer (``patterns[layer]`` [N, heads]: attention from the last position to position 0 over the group grid)
    and head: the frequency k maximising the energy of the waves of i alone and of j alone, over the mean-removed
    energy (its ``fve``), as :func:`~grokscope.analysis.attention_fits`."""
    fits = []
    for layer, to_first in enumerate(patterns):
        energy = group_transform_2d(to_first.to(torch.float64).reshape(n, n, -1)) ** 2
        mean = to_first.to(torch.float64).mean(dim=0)
        energy[0, 0] = 0.0
        total = energy.sum(dim=(0, 1))
        per_k = []
        for k in range(1, n // 2 + 1):
            rows = torch.tensor(frequency_rows(k, n))
            per_k.append(energy[0, rows].sum(dim=0) + energy[rows, 0].sum(dim=0))
        frac = torch.stack(per_k)
        frac = torch.where(total > 0, frac / total.clamp_min(1e-300), torch.zeros_like(frac))
        best, arg = frac.max(dim=0)
        fits += [HeadFit(layer, h, int(arg[h]) + 1, float(best[h]), float(mean[h])) for h in range(frac.shape[1])]
    return fits


def group_star_plot_data(w_e: Tensor, w_in: Tensor, w_l: Tensor) -> list[StarNeuron]:
    """PAIR star plots in the group basis: ``w_e`` [n, d_model] (W_E rows in a's group order), ``w_in``
    [d_model, d_mlp], ``w_l`` [d_mlp, n] (W_L columns in the outputs' group order); as
    :func:`~grokscope.analysis.star_plot_data` (the Nyquist frequency has sine 0)."""
    n = w_e.shape[0]
    h = group_transform(w_e.to(torch.float64) @ w_in.to(torch.float64), 0)  # [n, d_mlp]
    o = group_transform(w_l.to(torch.float64).T, 0)
    norms = torch.stack([h[frequency_rows(k, n)].norm(dim=0) for k in range(1, n // 2 + 1)])
    freq = norms.argmax(dim=0) + 1
    out = []
    for j in range(h.shape[1]):
        f = int(freq[j])
        rows = frequency_rows(f, n)
        ci, co = float(h[rows[0], j]), float(o[rows[0], j])
        si, so = (float(h[rows[1], j]), float(o[rows[1], j])) if len(rows) == 2 else (0.0, 0.0)
        out.append(StarNeuron(j, f, ci, si, math.atan2(si, ci), co, so, math.atan2(so, co)))
    return out


def group_ffs_fcr(w_e: Tensor, eta: float = 0.25) -> tuple[float, float]:
    """FFS and FCR of the viewed embedding [n, d_model]: FFS = the fraction of the n//2 frequencies whose norm exceeds
    ``eta`` x the largest; FCR = the mean min/max of the cos and sin norms over the used frequencies that have both
    (the Nyquist, a cosine alone, counts for FFS only). All-zero: (0, nan)."""
    comps = group_component_norms(w_e, 0)
    n = comps.shape[0]
    norms = group_frequency_norms(w_e, 0)
    if norms.numel() == 0 or float(norms.max()) <= 0:
        return 0.0, float("nan")
    used = norms > eta * norms.max()
    m = (n - 1) // 2
    c, s = comps[1 : 2 * m + 1 : 2], comps[2 : 2 * m + 1 : 2]
    pair_used = used[:m]
    ratio = (torch.minimum(c, s)[pair_used] / torch.maximum(c, s)[pair_used].clamp_min(1e-300))
    return float(used.to(torch.float64).mean()), float(ratio.mean()) if ratio.numel() else float("nan")


def group_key_frequencies(rule: str, *, w_e: Tensor, w_l: Tensor, table: Tensor, acts: Tensor | None
                          ) -> list[int]:
    """Key frequencies (1..n//2) of a model viewed in a group basis by the named rule of
    :func:`~grokscope.measures.key_frequencies`: ``W_L_dft``/``W_L_online`` on ``w_l`` [d_mlp, n], ``W_E_norm`` on
    ``w_e`` [n, d_model], ``neuron_cluster`` on ``acts`` [N, d_mlp], ``logits_dft`` on ``table`` [N, n]."""
    n = w_l.shape[1]
    if rule == "W_L_dft":
        return key_frequencies_from_norms(group_frequency_norms(w_l, 1))
    if rule == "W_L_online":
        return key_frequencies_online(group_frequency_norms(w_l, 1))
    if rule == "W_E_norm":
        comps = group_component_norms(w_e, 0)[1:]
        if float(comps.max()) <= 0:
            return []
        keep = torch.nonzero(comps > W_E_NORM_FRACTION * comps.max()).reshape(-1) + 1
        return sorted({(int(i) + 1) // 2 for i in keep})
    if rule == "neuron_cluster":
        if acts is None:
            return []
        fracs = group_block_fractions(group_neuron_energy(acts, n), n, quadratic=False)
        best, arg = fracs.max(dim=0)
        return sorted({int(k) + 1 for k in arg[best >= NEURON_FVE_THRESHOLD]})
    if rule == "logits_dft":
        return key_frequencies_from_norms(group_frequency_norms(table, 1))
    raise MeasureError(f"unknown key-frequency rule {rule!r}; known: {', '.join(KEY_FREQ_RULES)}")
