"""Lazy or rich: how far the weights moved, and how well the network's tangent kernel fits the labels.

Kumar et al. (2024), "Grokking as the transition from lazy to rich training dynamics": a network trained in the
lazy regime stays near its initial weights and near its initial neural tangent kernel; a rich one moves and aligns
its kernel with the task. Two pure functions (tensors in, numbers out):

- :func:`relative_weight_change`: ``||theta_t - theta_0||_2 / ||theta_0||_2`` over all the given tensors.
- :func:`kernel_alignment`: the centred kernel alignment (CKA) of two [m, m] kernels.
- :func:`ntk_alignment`: the CKA of the class-summed empirical NTK of the logits on m examples,
  ``K_ij = sum_c <d f_c(x_i) / d theta, d f_c(x_j) / d theta>``, with the label kernel ``L_ij = [y_i == y_j]``.

docs/measures.md gives the definitions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from grokscope.device import float64_device

__all__ = ["kernel_alignment", "ntk_alignment", "relative_weight_change"]


def relative_weight_change(current: Mapping[str, Tensor], initial: Mapping[str, Tensor]) -> float:
    """``sqrt(sum_k ||current[k] - initial[k]||^2) / sqrt(sum_k ||initial[k]||^2)`` over the keys of ``initial``
    (float64); tensors of any shape, ``current[k]`` the shape of ``initial[k]``. NaN when the initial norm is 0."""
    num = 0.0
    den = 0.0
    for name, w0 in initial.items():
        w0 = w0.detach().to(torch.float64)
        w = current[name].detach().to(device=w0.device, dtype=torch.float64)
        num += float(((w - w0) ** 2).sum())
        den += float((w0**2).sum())
    return num**0.5 / den**0.5 if den > 0 else float("nan")


def kernel_alignment(K: Tensor, L: Tensor) -> float:
    """Centred kernel alignment of two kernels K, L [m, m]: ``<HKH, HLH>_F / (||HKH||_F ||HLH||_F)`` with
    ``H = I - 11^T / m`` (float64). In [-1, 1] for positive semi-definite kernels; invariant to scaling either
    kernel; NaN when a centred kernel is 0."""
    m = K.shape[0]
    H = torch.eye(m, dtype=torch.float64, device=K.device) - 1.0 / m
    Kc = H @ K.to(torch.float64) @ H
    Lc = H @ L.to(device=K.device, dtype=torch.float64) @ H
    den = float(Kc.norm() * Lc.norm())
    return float((Kc * Lc).sum()) / den if den > 0 else float("nan")


def empirical_ntk(forward: Callable[[Tensor], Tensor], params: Mapping[str, Tensor], inputs: Tensor) -> Tensor:
    """The class-summed empirical NTK [m, m] of ``forward`` (inputs [m, ...] -> logits [m, C]) with respect to the
    tensors ``params`` (which must require gradients): ``K_ij = sum_c <grad f_c(x_i), grad f_c(x_j)>``, float64.
    One backward pass per (example, class): meant for small m and C. The kernel is on the inputs' device, or on the
    CPU for MPS (which has no float64)."""
    tensors = [t for t in params.values() if t.requires_grad]
    where = float64_device(inputs.device)
    rows = []
    for i in range(inputs.shape[0]):
        with torch.enable_grad():
            out = forward(inputs[i : i + 1])[0]  # [C]
            for c in range(out.shape[0]):
                grads = torch.autograd.grad(out[c], tensors, retain_graph=c + 1 < out.shape[0], allow_unused=True)
                rows.append(torch.cat([(g if g is not None else torch.zeros_like(t)).reshape(-1)
                                       .to(device=where, dtype=torch.float64) for g, t in zip(grads, tensors)]))
    C = len(rows) // inputs.shape[0]
    J = torch.stack(rows).reshape(inputs.shape[0], C, -1)  # [m, C, P]
    return torch.einsum("icp,jcp->ij", J, J)


def ntk_alignment(model, inputs: Tensor, labels: Tensor) -> float:
    """CKA (:func:`kernel_alignment`) of the class-summed empirical NTK of ``model`` (inputs [m, ...] -> logits
    [m, C]; every trainable parameter) on ``inputs`` with the label kernel ``L_ij = [labels_i == labels_j]``
    (labels [m])."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    K = empirical_ntk(model, params, inputs)
    L = (labels[:, None] == labels[None, :]).to(device=K.device, dtype=torch.float64)
    return kernel_alignment(K, L)
