"""Per-task analyses of the zoo (issue 7): spectra in the additive and discrete-log bases (multiplication and
division), operand asymmetry (subtraction) and the input bits that sparse-parity neurons read.

FFS and FCR are the reconstructed (Furuta-style) measures of :func:`grokscope.measures.ffs_fcr`, computed from
per-frequency cos/sin norms of W_E over the number tokens in either basis.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from grokscope.measures.fourier import component_norms, discrete_log_basis, primitive_root
from grokscope.measures.progress import FFS_ETA

__all__ = ["ffs_fcr_from_norms", "operand_asymmetry", "parity_neuron_bits", "spectra_both_bases"]


def ffs_fcr_from_norms(c: Tensor, s: Tensor, eta: float = FFS_ETA) -> tuple[float, float]:
    """FFS = fraction of frequencies with sqrt(c^2 + s^2) > eta * max; FCR = mean over those of min(c, s)/max(c, s)."""
    n = torch.sqrt(c**2 + s**2)
    if n.numel() == 0 or float(n.max()) <= 0:
        return 0.0, float("nan")
    used = n > eta * n.max()
    ratio = torch.minimum(c, s)[used] / torch.maximum(c, s)[used]
    return float(used.to(torch.float64).mean()), float(ratio.mean())


def spectra_both_bases(w_e: Tensor, p: int, g: int | None = None, eta: float = FFS_ETA) -> dict[str, Any]:
    """Spectrum of the number-token embedding W_E[:p] [p, d_model] in the additive Fourier basis over Z_p and in the
    discrete-log basis over Z_p^* (tokens 1..p-1, generator ``g``, default the smallest primitive root; token 0 is
    left out since a*0 = 0). Returns ``ffs_add, fcr_add, ffs_log, fcr_log`` and the per-frequency norms
    ``norms_add`` [(p-1)/2] and ``norms_log`` [(p-1)/2 - 1] (cos/sin pairs; the Nyquist row is reported alone as
    ``nyquist_log``), and ``top_add`` / ``top_log``: the 5 strongest frequencies of each basis.
    Multiplication and division that grokked: dense in the additive basis, sparse in the discrete-log one."""
    w = w_e.detach().to(torch.float64)[:p]
    add = component_norms(w, dim=0)  # basis of fourier_basis(p): const, cos 1, sin 1, ...
    c_add, s_add = add[1::2], add[2::2]
    g = primitive_root(p) if g is None else g
    log_coeffs = discrete_log_basis(p, g) @ w[1:]  # [p-1, d_model]
    log_norms = log_coeffs.norm(dim=1)
    k_max = (p - 1) // 2 - 1
    c_log, s_log = log_norms[1 : 2 * k_max + 1 : 2], log_norms[2 : 2 * k_max + 1 : 2]
    out: dict[str, Any] = {"generator": g}
    out["ffs_add"], out["fcr_add"] = ffs_fcr_from_norms(c_add, s_add, eta)
    out["ffs_log"], out["fcr_log"] = ffs_fcr_from_norms(c_log, s_log, eta)
    n_add, n_log = torch.sqrt(c_add**2 + s_add**2), torch.sqrt(c_log**2 + s_log**2)
    out["norms_add"], out["norms_log"] = n_add.tolist(), n_log.tolist()
    out["nyquist_log"] = float(log_norms[-1])
    out["top_add"] = [int(i) + 1 for i in torch.argsort(-n_add)[:5]]
    out["top_log"] = [int(i) + 1 for i in torch.argsort(-n_log)[:5]]
    return out


def operand_asymmetry(acts: Tensor, p: int) -> dict[str, float]:
    """How differently the hidden layer treats a and b. ``acts``: [p*p, d] (grid order, a slow) or [p, p, d].

    ``asymmetry`` = ||A - A^T|| / ||A|| over the mean-removed activations with A^T swapping a and b (0 for a
    symmetric task such as addition); ``energy_a``/``energy_b``: fraction of the variance in the mean over b (a
    function of a alone) and over a (of b alone)."""
    A = acts.detach().to(torch.float64).reshape(p, p, -1)
    A = A - A.mean(dim=(0, 1), keepdim=True)
    total = float((A**2).sum())
    if total <= 0:
        return {"asymmetry": 0.0, "energy_a": 0.0, "energy_b": 0.0}
    swap = A.transpose(0, 1)
    return {
        "asymmetry": math.sqrt(float(((A - swap) ** 2).sum()) / total),
        "energy_a": float((A.mean(dim=1) ** 2).sum()) * p / total,
        "energy_b": float((A.mean(dim=0) ** 2).sum()) * p / total,
    }


def parity_neuron_bits(model: nn.Module, *, neuron_fraction: float = 0.1, bit_fraction: float = 0.5) -> list[dict[str, Any]]:
    """Which input bits the surviving neurons of a :class:`~grokscope.models.VectorMLP` read.

    A neuron j survives when ||W_in[:, j]|| * ||W_out[j]|| > ``neuron_fraction`` * the largest such product; it
    reads bit i (the last input, the constant 1, is left out) when |W_in[i, j]| > ``bit_fraction`` * max_i |W_in[i, j]|.
    Returns [{neuron, strength, bits}] strongest first. After grokking sparse parity, the bits are the first k."""
    w_in = model.mlp.W_in.detach().to(torch.float64)  # [n_in, d_mlp]
    w_out = model.mlp.W_out.detach().to(torch.float64)  # [d_mlp, C]
    strength = w_in.norm(dim=0) * w_out.norm(dim=1)
    if float(strength.max()) <= 0:
        return []
    bits = w_in[:-1].abs()
    out = []
    for j in torch.argsort(-strength).tolist():
        if strength[j] <= neuron_fraction * strength.max():
            break
        col = bits[:, j]
        read = torch.nonzero(col > bit_fraction * col.max()).reshape(-1).tolist()
        out.append({"neuron": j, "strength": float(strength[j]), "bits": read})
    return out
