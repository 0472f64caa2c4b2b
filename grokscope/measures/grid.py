"""A model read over the p*p input grid of a modular task: the grid order, the logit table, the last MLP's
activations and neuron-to-logit map, and each neuron's Fourier energy. Shared by the measures, the analysis,
interp and the figures.

Shapes: p is the modulus; N = p*p inputs; "grid order" is row a*p + b (a slow); logit tables are [N, p] float64;
``W_E[:p]`` is [p, d_model]; ``W_L = W_out @ W_U[:, :p]`` is [d_mlp, p].
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from grokscope.measures.fourier import fourier_transform_2d, n_frequencies
from grokscope.models import Model, has_blocks, has_mlp
from grokscope.models.forward import choose_forward, model_device
from grokscope.tasks import task_to

M = TypeVar("M", bound=torch.nn.Module)  # any module: grokscope's models and yours

if TYPE_CHECKING:
    from grokscope.models.mlp import MLPWeights
    from grokscope.models.transformer import MLP

__all__ = [
    "MeasureError", "block_fractions", "check_task", "cross_entropy", "grid_order", "grid_rows", "logit_table",
    "mlp_activations", "neuron_energy", "neuron_frequency_fractions", "neuron_logit_map", "number_embedding",
    "on_cpu", "post_hook_name",
]


def on_cpu(model: M, task: Any, logits: Tensor | None = None) -> tuple[M, Any, Tensor | None]:
    """The model, task and logits as CPU tensors: the measures compute in float64, which MPS lacks, and they are a
    small share of a run's time, so a model on a device is measured through a CPU copy (the same numbers a CPU
    run's weights would give). On the CPU, the arguments themselves (nothing is copied)."""
    if model_device(model).type == "cpu":
        return model, task, logits
    cpu_model = copy.deepcopy(model).cpu()
    cpu_task = None if task is None else task_to(task, "cpu")
    return cpu_model, cpu_task, None if logits is None else logits.cpu()


class MeasureError(ValueError):
    """A model or task the measures cannot handle; the message is one line."""


def check_task(task: Any) -> int:
    """Return p if ``task`` is a modular task over the full p*p grid with odd p; raise :class:`MeasureError`."""
    cfg = getattr(task, "config", None)
    kind = getattr(cfg, "kind", None)
    if kind != "modular" or not hasattr(task, "is_full_grid"):
        raise MeasureError(f"progress measures need a modular task (task.kind='modular'), got kind {kind!r}")
    if not task.is_full_grid:
        raise MeasureError(
            f"progress measures need every one of the p*p pairs as an input; the formula "
            f"{getattr(cfg, 'formula', '?')!r} leaves some out (division by zero), so the Fourier projections are "
            "not defined"
        )
    p = task.p
    if p % 2 == 0:
        raise MeasureError(f"progress measures need an odd modulus p, got p={p}")
    return p


def grid_order(task: Any) -> Tensor:
    """Permutation taking task rows to grid rows: grid[i] = rows[perm[i]] with i = a*p + b."""
    perm = torch.empty_like(task.pair_index)
    perm[task.pair_index] = torch.arange(task.pair_index.shape[0], device=perm.device)
    return perm


def grid_rows(task: Any, rows: Tensor) -> Tensor:
    """The grid rows (a*p + b) of the task rows ``rows`` (``task.train_idx``, say): :func:`grid_order` inverted."""
    return task.pair_index[rows]


def _mlp_of(model: Model) -> MLP | MLPWeights:
    if has_blocks(model):
        return model.blocks[-1].mlp
    if has_mlp(model):
        return model.mlp
    raise MeasureError(f"{type(model).__name__} has no MLP (expected .blocks[i].mlp or .mlp)")


def post_hook_name(model: Model) -> str:
    """The hook name of the last MLP's activations (``hook_post``) of a transformer or an MLP model."""
    if has_blocks(model):
        return f"blocks.{len(model.blocks) - 1}.mlp.hook_post"
    return "mlp.hook_post"


def number_embedding(model: Model, p: int) -> Tensor:
    """W_E restricted to the number tokens 0..p-1: [p, d_model] float64 (detached)."""
    w_e = model.W_E  # a VectorMLP has none (AttributeError)
    assert isinstance(w_e, Tensor)
    return w_e.detach()[:p].to(torch.float64)


def neuron_logit_map(model: Model, p: int) -> Tensor:
    """W_L = W_out @ W_U[:, :p] (TransformerLens orientation, last layer's MLP): [d_mlp, p] float64.

    The "=" output column of a (p+1)-output head is dropped (ambiguity A5)."""
    w_out = _mlp_of(model).W_out.detach().to(torch.float64)
    w_u = model.W_U  # a VectorMLP has none (AttributeError)
    assert isinstance(w_u, Tensor)
    w_u = w_u.detach()[:, :p].to(torch.float64)
    return w_out @ w_u


def logit_table(model: Model, task: Any, logits: Tensor | None = None) -> Tensor:
    """Logits over every input in grid order (row a*p + b): [p*p, p] float64.

    ``logits`` (optional) is the model's output on ``task.tokens`` in that order, [N, >= p]; columns past p
    (a "=" output) are dropped. Without it, one forward pass over all inputs is run under ``no_grad``, by
    :func:`~grokscope.models.forward.choose_forward` (what the training loop's measures read).
    """
    p = task.p
    if logits is None:
        with torch.no_grad():
            logits = choose_forward(model, task).fn(task.tokens)
    if logits.shape[0] != task.tokens.shape[0] or logits.shape[1] < p:
        raise MeasureError(
            f"logits must be [{task.tokens.shape[0]}, {p}] in task.tokens order, got {tuple(logits.shape)}"
        )
    table = logits.detach()[:, :p].to(torch.float64)
    return table[grid_order(task)]


def mlp_activations(model: Model, task: Any) -> Tensor:
    """Last MLP layer's post-activations at the last position, grid order: [p*p, d_mlp] float64."""
    with torch.no_grad():
        _, cache = model.run_with_cache(task.tokens)
    acts = cache[post_hook_name(model)]
    if acts.dim() == 3:
        acts = acts[:, -1]
    return acts.detach().to(torch.float64)[grid_order(task)]


def cross_entropy(table: Tensor, labels: Tensor) -> tuple[float, float]:
    """Mean cross-entropy (float64 log-softmax) and accuracy of logits [n, p] against labels [n]."""
    if table.shape[0] == 0:
        return float("nan"), float("nan")
    table = table.detach()
    logp = F.log_softmax(table.to(torch.float64), dim=-1)
    loss = -logp.gather(1, labels[:, None]).mean()
    acc = (table.argmax(dim=-1) == labels).to(torch.float64).mean()
    return float(loss), float(acc)


# ----------------------------------------------------------------------------- each neuron's frequencies


def neuron_frequency_fractions(acts: Tensor, p: int, *, quadratic: bool = False) -> Tensor:
    """Fraction of each neuron's variance over the p*p grid explained by one frequency: [(p-1)/2, d_mlp].

    ``acts``: [p*p, d_mlp] (grid order) or [p, p, d_mlp]. The 2D DFT (F A F^T) of each neuron is taken, the
    (0, 0) component (its mean) dropped, and frac_k = energy in {0, 2k-1, 2k}^2 / total energy. That 3x3 block
    (the original code's rule, default) spans the polynomials of degree <= 1 in each of (cos, sin)(w_k a) and
    (cos, sin)(w_k b). ``quadratic=True`` also counts the squares cos^2, sin^2, cos*sin of w_k a and of w_k b,
    i.e. adds the 4 components (0, 2j-1), (0, 2j), (2j-1, 0), (2j, 0) of the harmonic j = 2k mod p: every
    polynomial of degree <= 2 in the four waves. A constant neuron gets 0.
    """
    return block_fractions(neuron_energy(acts, p), p, quadratic=quadratic)


def neuron_energy(acts: Tensor, p: int) -> Tensor:
    """Squared 2D-DFT coefficients of each neuron over the grid, mean component zeroed: [p, p, d_mlp]."""
    energy = fourier_transform_2d(acts.to(torch.float64).reshape(p, p, -1)) ** 2
    energy[0, 0] = 0.0
    return energy


def _harmonic(k: int, p: int) -> int:
    """The frequency index (1..(p-1)/2) of 2k mod p: cos(2 w_k x) = cos(w_j x) with j = min(2k, p - 2k)."""
    return min(2 * k % p, p - 2 * k % p)


def block_fractions(energy: Tensor, p: int, *, quadratic: bool) -> Tensor:
    """Per key frequency k, each neuron's share of its energy [p, p, d] (from :func:`neuron_energy`) in the 3x3
    block of (const, cos k, sin k) in both inputs (``quadratic``: plus the harmonic 2k on each input alone): [K, d]."""
    total = energy.sum(dim=(0, 1))  # [d]
    fracs = []
    for k in range(1, n_frequencies(p) + 1):
        idx = torch.tensor([0, 2 * k - 1, 2 * k], device=energy.device)
        e = energy[idx][:, idx].sum(dim=(0, 1))
        if quadratic:
            j = _harmonic(k, p)
            if j != k:  # (j == k only for p = 3)
                hj = torch.tensor([2 * j - 1, 2 * j], device=energy.device)
                e = e + energy[0, hj].sum(dim=0) + energy[hj, 0].sum(dim=0)
        fracs.append(e)
    block = torch.stack(fracs)  # [K, d]
    return torch.where(total > 0, block / total.clamp_min(1e-300), torch.zeros_like(block))
