"""Per-task analyses of the zoo: spectra in the additive and discrete-log bases (multiplication, division
and polynomials, with the exact pattern structure of the task's table), operand asymmetry (subtraction), the input
bits that sparse-parity neurons read, S5 in its irreducible representations, and the scores of a checkpoint per
answer position or operation.
:func:`zoo_analysis` picks the ones that fit a task (``grokscope analyze`` stores them under ``"zoo"``);
:func:`render_zoo` prints them.

FFS and FCR are the reconstructed (Furuta-style) measures of :func:`grokscope.measures.ffs_fcr`, computed from
per-frequency cos/sin norms of W_E over the number tokens in either basis.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from grokscope.analysis.irreps import irrep_analysis, render_irreps
from grokscope.analysis.reverse import json_safe
from grokscope.formula import parse_formula
from grokscope.measures import (
    FFS_ETA,
    component_norms,
    discrete_log_basis,
    ffs_fcr_from_norms,
    grid_order,
    is_prime,
    post_hook_name,
    primitive_root,
)
from grokscope.models import Model, VectorMLP
from grokscope.tasks import answer_view, is_sequence_task, task_metrics

__all__ = [
    "checkpoint_scores", "operand_asymmetry", "parity_neuron_bits", "render_zoo", "sparser_basis",
    "spectra_both_bases", "task_structure", "zoo_analysis",
]


def spectra_both_bases(
    w_e: Tensor, p: int, g: int | None = None, eta: float = FFS_ETA, shift: int = 0
) -> dict[str, Any]:
    """Spectrum of the number-token embedding W_E[:p] [p, d_model] in the additive Fourier basis over Z_p and in the
    discrete-log basis over Z_p^* (tokens 1..p-1, generator ``g``, default the smallest primitive root; token 0 is
    left out since a*0 = 0). Returns ``ffs_add, fcr_add, ffs_log, fcr_log`` and the per-frequency norms
    ``norms_add`` [(p-1)/2] and ``norms_log`` [(p-1)/2 - 1] (cos/sin pairs; the Nyquist row is reported alone as
    ``nyquist_log``), and ``top_add`` / ``top_log``: the 5 strongest frequencies of each basis.
    Multiplication and division that grokked: dense in the additive basis, sparse in the discrete-log one.
    ``shift`` c: the discrete-log basis is taken over t + c instead of t (tokens t with t + c ≠ 0), for tasks that
    are a function of (a + c)(b + c) (ab + a + b = (a + 1)(b + 1) − 1; see :func:`task_structure`)."""
    w = w_e.detach().to(torch.float64)[:p]
    add = component_norms(w, dim=0)  # basis of fourier_basis(p): const, cos 1, sin 1, ...
    c_add, s_add = add[1::2], add[2::2]
    g = primitive_root(p) if g is None else g
    by_u = w[(torch.arange(p, device=w.device) - shift) % p]  # row u holds the embedding of token u - shift
    log_coeffs = discrete_log_basis(p, g).to(w.device) @ by_u[1:]  # [p-1, d_model]
    log_norms = log_coeffs.norm(dim=1)
    k_max = (p - 1) // 2 - 1
    c_log, s_log = log_norms[1 : 2 * k_max + 1 : 2], log_norms[2 : 2 * k_max + 1 : 2]
    out: dict[str, Any] = {"generator": g, "shift": shift}
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


def task_structure(table: Tensor, p: int) -> dict[str, Any]:
    """Which elementary patterns make up the label table ``f(a, b)`` [p, p] (row a, column b; labels mod p):

    ``symmetric``: f(a, b) = f(b, a). ``sum_only``: f depends on a + b alone (f(a, b) = f(a + b, 0)), the additive
    pattern. ``product_only``: f depends on a·b alone (f(a, b) = f(ab, 1)), the multiplicative pattern.
    ``separable``: f(a, b) = g(a) + h(b) mod p (f(a, b) − f(a, 0) − f(0, b) + f(0, 0) ≡ 0), a superposition of
    one pattern in a and one in b (a² + b², a − b, 2a + 3b). ``product_shift``: the smallest c ≥ 0 for which f
    depends on (a + c)(b + c) alone (0 when ``product_only``; 1 for ab + a + b), else None."""
    f = table.to(torch.int64).reshape(p, p)
    idx = torch.arange(p, device=f.device)
    a, b = idx[:, None], idx[None, :]
    shift = None
    for c in range(p):  # (a + c)(b + c) = v is reached by (v - c, 1 - c): compare f with f there
        v = ((a + c) * (b + c)) % p
        if torch.equal(f, f[(v - c) % p, (1 - c) % p]):
            shift = c
            break
    return {
        "symmetric": bool(torch.equal(f, f.T)),
        "sum_only": bool(torch.equal(f, f[(a + b) % p, 0])),
        "product_only": shift == 0,
        "product_shift": shift,
        "separable": bool(((f - f[:, :1] - f[:1, :] + f[0, 0]) % p == 0).all()),
    }


def sparser_basis(spectra: dict[str, Any], margin: float = 0.1) -> str:
    """``"additive"`` or ``"discrete-log"``: the basis in which W_E's FFS (fraction of frequencies in use) is lower
    by more than ``margin``; ``"neither"`` when they are within it (both dense, or a superposition of both)."""
    add, log = spectra["ffs_add"], spectra["ffs_log"]
    if add < log - margin:
        return "additive"
    if log < add - margin:
        return "discrete-log"
    return "neither"


def parity_neuron_bits(
    model: VectorMLP, *, neuron_fraction: float = 0.1, bit_fraction: float = 0.5
) -> list[dict[str, Any]]:
    """Which input bits the surviving neurons of a :class:`~grokscope.models.VectorMLP` read.

    A neuron j survives when ||W_in[:, j]|| * ||W_out[j]|| > ``neuron_fraction`` * the largest such product; it
    reads bit i (the last input, the constant 1, is left out) when |W_in[i, j]| > ``bit_fraction`` *
    max_i |W_in[i, j]|.
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


# --------------------------------------------------------------------------- per task: what fits, and its text


def checkpoint_scores(model: Model, task: Any, loss_dtype: torch.dtype = torch.float64) -> dict[str, float]:
    """Train/test cross-entropy and accuracy of ``model`` on ``task`` (sequence tasks: over the answer tokens), plus
    the task's own metrics (per operation, per answer position, whole-sequence accuracy)."""
    model.eval()
    with torch.no_grad():
        logits = model.forward_all(task.tokens) if is_sequence_task(task) else model(task.tokens)
    out: dict[str, float] = {}
    for split, idx in (("train", task.train_idx), ("test", task.test_idx)):
        if idx.numel():
            z, y = logits[idx], task.labels[idx]
            if is_sequence_task(task):
                z, y = answer_view(z, y)
            out[f"{split}_loss"] = F.cross_entropy(z.to(loss_dtype), y).item()
            out[f"{split}_acc"] = (z.argmax(-1) == y).to(torch.float64).mean().item()
    out.update(task_metrics(task, logits, loss_dtype))
    return out


def _formula_ops(text: str) -> set[str]:
    ops: set[str] = set()

    def walk(node: tuple) -> None:
        ops.add(node[0])
        for child in node[1:]:
            if isinstance(child, tuple):
                walk(child)

    walk(parse_formula(text).tree)
    return ops


def _hidden_on_grid(model: Model, task: Any) -> Tensor | None:
    """Last-layer MLP activations at the last position in grid order [p*p, d_mlp], or None without an MLP."""
    name = post_hook_name(model)
    with torch.no_grad():
        _, cache = model.run_with_cache(task.tokens)
    if name not in cache:
        return None
    acts = cache[name]
    acts = acts[:, -1] if acts.ndim == 3 else acts
    return acts[grid_order(task)]


def zoo_analysis(model: Model, task: Any, *, scores: bool = True) -> dict[str, Any]:
    """The analyses that fit ``task`` (JSON-ready; non-finite numbers become None):

    ``scores`` (when asked): :func:`checkpoint_scores`. ``spectra``: :func:`spectra_both_bases` of W_E for modular
    and multi-task formulas that multiply, divide or raise to a power, p prime, with :func:`sparser_basis`; with
    them, for a full-grid modular task, ``structure``: :func:`task_structure` of its label table (which patterns the
    task is made of, to compare with the basis the model chose). ``asymmetry``: :func:`operand_asymmetry` of the MLP
    activations for a modular formula over the full grid that is not symmetric in a and b (subtraction).
    ``parity_neurons``: :func:`parity_neuron_bits` for sparse parity. ``irreps``: for S5,
    :func:`~grokscope.analysis.irreps.irrep_analysis` (the irreps W_E, W_U and the logits use, the GCR logit fit,
    restricted and excluded loss)."""
    cfg = task.config
    out: dict[str, Any] = {"kind": cfg.kind}
    if scores:
        out["scores"] = checkpoint_scores(model, task)
    if cfg.kind in ("modular", "multi") and is_prime(cfg.p):
        formulas = [f.strip() for f in cfg.formula.split(";")]
        if any(_formula_ops(f) & {"*", "/", "pow"} for f in formulas) and hasattr(model, "W_E"):
            w_e = model.W_E
            assert isinstance(w_e, Tensor)
            shift = 0
            if cfg.kind == "modular" and getattr(task, "is_full_grid", False) and cfg.pairs == "all":
                out["structure"] = task_structure(task.labels[grid_order(task)], cfg.p)
                shift = out["structure"]["product_shift"] or 0
            out["spectra"] = spectra_both_bases(w_e, cfg.p, shift=shift)
            out["spectra"]["sparser_basis"] = sparser_basis(out["spectra"])
    if cfg.kind == "modular" and getattr(task, "is_full_grid", False) and cfg.pairs == "all":
        p = cfg.p
        table = task.labels[grid_order(task)].reshape(p, p)
        if not torch.equal(table, table.T):
            acts = _hidden_on_grid(model, task)
            if acts is not None:
                out["asymmetry"] = operand_asymmetry(acts, p)
    if cfg.kind == "s5" and hasattr(model, "W_E") and hasattr(model, "W_U"):
        out["irreps"] = irrep_analysis(model, task)
    if cfg.kind == "sparse_parity":
        assert isinstance(model, VectorMLP)  # the config allows only arch vector_mlp for sparse parity
        out["parity_neurons"] = parity_neuron_bits(model)
        out["parity_bits"] = list(range(cfg.parity_k))
    return json_safe(out)


def _num(x: Any, fmt: str = ".4g") -> str:
    return "-" if x is None else format(x, fmt)


def render_zoo(z: dict[str, Any], *, top: int = 10) -> str:
    """:func:`zoo_analysis` output as text (empty when there is nothing to show)."""
    lines: list[str] = []
    scores = z.get("scores")
    if scores:

        def num(name: str) -> str:
            return _num(scores.get(name))

        line = f"train loss {num('train_loss')}, acc {num('train_acc')}; "
        line += f"test loss {num('test_loss')}, acc {num('test_acc')}"
        if "test_seq_acc" in scores:
            line += f"; whole-sequence acc train {num('train_seq_acc')}, test {num('test_seq_acc')}"
        lines.append(line)
        per_group = (k.rsplit("_", 1)[1] for k in scores if k.startswith(("test_loss_", "train_loss_")))
        groups = sorted(set(per_group), key=lambda g: (len(g), g))
        if groups:
            lines.append(f"{'':<8}{'train acc':>11}{'test acc':>11}{'test loss':>12}")
            for g in groups:
                lines.append(f"{g:<8}{num(f'train_acc_{g}'):>11}{num(f'test_acc_{g}'):>11}{num(f'test_loss_{g}'):>12}")
    spectra = z.get("spectra")
    if spectra:
        lines.append("W_E spectrum (FFS / FCR reconstructed, Furuta-style):")
        log_label = f"discrete-log basis (g = {spectra['generator']})"
        log_label += f" of t+{spectra['shift']}" if spectra.get("shift") else ""
        width = max(28, len(log_label))
        for label, key in (("additive basis over Z_p", "add"), (log_label, "log")):
            ffs, fcr = _num(spectra["ffs_" + key], ".3f"), _num(spectra["fcr_" + key], ".3f")
            lines.append(f"  {label:<{width}} FFS {ffs}  FCR {fcr}  top frequencies {spectra['top_' + key]}")
        if "sparser_basis" in spectra:
            lines.append(f"  sparser basis: {spectra['sparser_basis']}")
    structure = z.get("structure")
    if structure:
        patterns = (("sum_only", "a function of a+b"), ("product_only", "a function of a*b"),
                    ("separable", "g(a) + h(b)"), ("symmetric", "symmetric in a, b"))
        made = [name for key, name in patterns if structure[key]]
        if shift := structure.get("product_shift"):
            made.insert(0, f"a function of (a+{shift})(b+{shift})")
        lines.append(f"task structure: {', '.join(made) if made else 'none of a+b only, a*b only, g(a)+h(b)'}")
    asym = z.get("asymmetry")
    if asym:
        lines.append(
            f"operand asymmetry ||A - A^T|| / ||A|| = {asym['asymmetry']:.3f}; variance in functions of a alone "
            f"{asym['energy_a']:.3f}, of b alone {asym['energy_b']:.3f}"
        )
    if z.get("irreps"):
        lines.append(render_irreps(z["irreps"]))
    neurons = z.get("parity_neurons")
    if neurons is not None:
        lines.append(f"sparse parity: {len(neurons)} surviving neurons (the label reads bits {z.get('parity_bits')}); "
                     "strongest:")
        for row in neurons[:top]:
            lines.append(f"  neuron {row['neuron']:>4}  strength {row['strength']:.3g}  bits {row['bits']}")
    for what, why in (z.get("skipped") or {}).items():
        lines.append(f"{what} not computed: {why}")
    return "\n".join(lines)
