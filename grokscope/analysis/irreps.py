"""Section 4 for S5 in its irreducible representations (Chughtai et al. 2023): which irreps the embedding, the
unembedding and the logits use, the character-based ("GCR") logit fit, and the loss with only the key irreps kept
(restricted) or removed (excluded). The irreps are :mod:`grokscope.measures.irreps`.

The logits of pair (x, y) are a function of the output c; the GCR fit explains them, centred over c, as
sum over key irreps rho of w_rho * chi_rho(t c^-1), t = the label of (x, y) (t = x y for ``x*y``: the paper's
chi_rho(x y c^-1)), with the weights fitted by least squares. Pure math: a model and a task in, numbers out.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from grokscope.measures.irreps import IRREP_DIMS, IRREP_NAMES, S5_ORDER, character_table, irrep_energy, project_irreps

__all__ = ["KEY_IRREP_FRACTION", "gcr_fit", "irrep_analysis", "irrep_logit_analysis", "key_irreps", "render_irreps"]

#: An irrep is key when it holds at least this fraction of the (centred) logits' energy.
KEY_IRREP_FRACTION = 0.05


def key_irreps(energy: dict[str, float], fraction: float = KEY_IRREP_FRACTION) -> list[str]:
    """The non-trivial irreps holding at least ``fraction`` of ``energy`` (as from
    :func:`~grokscope.measures.irreps.irrep_energy`), in :data:`IRREP_NAMES` order."""
    return [n for n in IRREP_NAMES[1:] if energy[n] >= fraction]


def _centred(f: Tensor) -> Tensor:
    """[120, m] (or [N, 120] with the mean over the last axis): the mean over S5 removed (the trivial irrep)."""
    return f - f.mean(dim=0, keepdim=True)


def gcr_fit(logits: Tensor, targets: Tensor, keys: list[str]) -> tuple[dict[str, float], float]:
    """Least-squares fit of logits [N, 120] (centred over c) by sum_rho w_rho chi_rho(t c^-1), t = targets [N] (S5
    indices). Returns ({irrep: w_rho}, FVE) with FVE = 1 - residual / ||centred logits||^2; (empty, 0) without keys.
    The characters of distinct irreps are orthogonal over c, so the weights do not depend on which others are kept.
    """
    z = logits.detach().to(torch.float64)
    z = z - z.mean(dim=-1, keepdim=True)
    total = float((z**2).sum())
    if not keys or total <= 0:
        return {}, 0.0
    # each [N, 120], mean 0 over c (non-trivial)
    feats = [character_table(name).to(targets.device)[targets] for name in keys]
    gram = torch.tensor([[float((u * v).sum()) for v in feats] for u in feats], dtype=torch.float64,
                        device=z.device)
    rhs = torch.tensor([float((u * z).sum()) for u in feats], dtype=torch.float64, device=z.device)
    w = torch.linalg.lstsq(gram, rhs[:, None]).solution[:, 0]
    fit = sum((wi * u for wi, u in zip(w, feats, strict=True)), torch.zeros_like(z))
    return {n: float(wi) for n, wi in zip(keys, w, strict=True)}, 1.0 - float(((z - fit) ** 2).sum()) / total


def irrep_logit_analysis(
    logits: Tensor, labels: Tensor, w_e: Tensor, w_u: Tensor, *, fraction: float = KEY_IRREP_FRACTION
) -> dict[str, Any]:
    """Pure core of :func:`irrep_analysis`. ``logits`` [N, 120] and ``labels`` [N] over the pairs, ``w_e`` [120, d]
    (number-token embeddings), ``w_u`` [d, 120]. Returns the energy fractions per irrep of W_E, W_U^T (each centred
    over the 120 elements) and of the logits (centred over c), their key irreps, the GCR weights and FVE, and the
    loss on all pairs: as is, restricted to the key irreps, and with them excluded (with ln 120 for scale)."""
    z = logits.detach().to(torch.float64)
    z = z - z.mean(dim=-1, keepdim=True)
    embed = irrep_energy(_centred(w_e.detach().to(torch.float64)))
    unembed = irrep_energy(_centred(w_u.detach().to(torch.float64).T))
    logit_energy = irrep_energy(z.T)  # columns: one function of c per pair
    keys = key_irreps(logit_energy, fraction)
    weights, fve = gcr_fit(z, labels, keys)
    kept = project_irreps(z, keys, dim=-1) if keys else torch.zeros_like(z)
    return {
        "irrep_dims": dict(IRREP_DIMS),
        "embed_energy": embed, "unembed_energy": unembed, "logit_energy": logit_energy,
        "embed_keys": key_irreps(embed, fraction), "unembed_keys": key_irreps(unembed, fraction),
        "key_irreps": keys, "key_fraction": fraction,
        "gcr_weights": weights, "gcr_fve": fve,
        "loss": F.cross_entropy(z, labels).item(),
        "restricted_loss": F.cross_entropy(kept, labels).item(),
        "excluded_loss": F.cross_entropy(z - kept, labels).item(),
        "log_n": math.log(S5_ORDER),
    }


def irrep_analysis(model: Any, task: Any, *, fraction: float = KEY_IRREP_FRACTION) -> dict[str, Any]:
    """:func:`irrep_logit_analysis` of ``model`` on an ``s5`` task (all 120 x 120 pairs; the model needs ``W_E`` and
    ``W_U``)."""
    model.eval()
    with torch.no_grad():
        logits = model(task.tokens)
    n = S5_ORDER
    return irrep_logit_analysis(logits[:, :n], task.labels, model.W_E[:n], model.W_U[:, :n], fraction=fraction)


def render_irreps(r: dict[str, Any]) -> str:
    """:func:`irrep_logit_analysis` output as text."""
    lines = ["S5 irreps (energy fraction per irrep; dims " + ", ".join(map(str, r["irrep_dims"].values())) + "):"]
    lines.append(f"  {'':<10}" + "".join(f"{n:>9}" for n in IRREP_NAMES))
    for label, key in (("W_E", "embed_energy"), ("W_U", "unembed_energy"), ("logits", "logit_energy")):
        lines.append(f"  {label:<10}" + "".join(f"{r[key][n]:>9.3f}" for n in IRREP_NAMES))
    lines.append(f"  key irreps {r['key_irreps']} (W_E {r['embed_keys']}, W_U {r['unembed_keys']})")
    weights = ", ".join(f"{n} {w:.3g}" for n, w in r["gcr_weights"].items())
    lines.append(f"  GCR logit fit FVE {r['gcr_fve']:.4f} (weights {weights or '-'})")
    lines.append(f"  loss {r['loss']:.4g}; restricted to the key irreps {r['restricted_loss']:.4g}; "
                 f"excluded {r['excluded_loss']:.4g} (ln 120 = {r['log_n']:.4g})")
    return "\n".join(lines)
