"""Key frequencies: the named rules that pick the frequencies a model computes with, and their declared thresholds
(``docs/measures.md``, ambiguity A3). Each rule returns a sorted list of ints in 1..(p-1)/2, [] when none is clear.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from grokscope.measures.fourier import component_norms, frequency_norms, n_frequencies
from grokscope.measures.grid import (
    MeasureError,
    check_task,
    logit_table,
    mlp_activations,
    neuron_frequency_fractions,
    neuron_logit_map,
    number_embedding,
    on_cpu,
)
from grokscope.models import Model

__all__ = [
    "KEY_FREQ_RULES", "KEY_GAP_FLOOR", "KEY_GAP_RATIO", "NEURON_FVE_THRESHOLD", "ONLINE_ENERGY_FACTOR",
    "W_E_NORM_FRACTION", "checked_key_set", "key_frequencies", "key_frequencies_from_logits",
    "key_frequencies_from_norms", "key_frequencies_online",
]

#: ``W_L_dft`` rule: the key set is the top-m frequencies by norm, m at the largest ratio between consecutive
#: sorted norms; accepted only if that ratio is at least KEY_GAP_RATIO (otherwise: no clear key frequency).
KEY_GAP_RATIO = 2.0
#: Norms below KEY_GAP_FLOOR * max are clamped to it first, so ratios inside numerical noise never win.
KEY_GAP_FLOOR = 1e-4
#: ``W_E_norm`` rule (TransformerLens demo): basis rows i > 0 of F @ W_E with norm > max / 4.
W_E_NORM_FRACTION = 0.25
#: ``neuron_cluster`` rule and the MLP analysis: a neuron belongs to frequency k when >= 85% of its
#: (mean-removed) variance over the p*p grid lies in the 3x3 block {0, 2k-1, 2k}^2 of its 2D DFT.
NEURON_FVE_THRESHOLD = 0.85
#: ``W_L_online`` fallback: with no clear gap, the frequencies whose W_L energy (squared norm) is at least
#: ONLINE_ENERGY_FACTOR times the mean energy over all frequencies (emerging frequencies during training).
ONLINE_ENERGY_FACTOR = 2.0

KEY_FREQ_RULES = ("W_L_dft", "W_L_online", "W_E_norm", "neuron_cluster", "logits_dft")


def checked_key_set(freqs: Iterable[int], p: int) -> list[int]:
    """A given key set, sorted and without repeats; :class:`MeasureError` unless each is in 1..(p-1)/2."""
    keys = sorted({int(k) for k in freqs})
    bad = [k for k in keys if not 1 <= k <= n_frequencies(p)]
    if bad:
        raise MeasureError(f"key frequencies must be in 1..{n_frequencies(p)} for p={p}, got {bad}")
    return keys


def key_frequencies_from_norms(
    norms: Tensor, ratio: float = KEY_GAP_RATIO, floor: float = KEY_GAP_FLOOR
) -> list[int]:
    """The ``W_L_dft`` selection on per-frequency norms [(p-1)/2] (index 0 is frequency 1).

    Sort the norms descending (clamped below at ``floor * max``); let m be the position of the largest ratio
    n_(m) / n_(m+1) for m = 1..K-1 (the smallest m on ties). If that ratio is >= ``ratio`` the key set is the m
    largest frequencies, returned sorted ascending; otherwise there is no clear key set and ``[]`` is returned.
    """
    norms = norms.detach().to(torch.float64).reshape(-1)
    if norms.numel() < 2 or float(norms.max()) <= 0:
        return []
    clamped = norms.clamp_min(float(norms.max()) * floor)
    order = torch.argsort(-clamped, stable=True)
    sorted_n = clamped[order]
    ratios = sorted_n[:-1] / sorted_n[1:]
    m = int(torch.argmax(ratios))  # first maximum
    if float(ratios[m]) < ratio:
        return []
    return sorted(int(i) + 1 for i in order[: m + 1])


def key_frequencies_online(norms: Tensor, factor: float = ONLINE_ENERGY_FACTOR) -> list[int]:
    """The ``W_L_online`` selection on per-frequency norms [(p-1)/2]: the ``W_L_dft`` largest-gap set if there
    is a clear gap; otherwise the frequencies with norm^2 >= ``factor`` * mean(norm^2) (often [] early on)."""
    clear = key_frequencies_from_norms(norms)
    if clear:
        return clear
    energy = norms.detach().to(torch.float64).reshape(-1) ** 2
    if energy.numel() == 0 or float(energy.sum()) <= 0:
        return []
    return [int(i) + 1 for i in torch.nonzero(energy >= factor * energy.mean()).reshape(-1)]


def key_frequencies_from_logits(table: Tensor) -> list[int]:
    """The ``logits_dft`` selection on a logit table [n_inputs, p]: largest-gap rule on its per-frequency norms
    along the output axis."""
    return key_frequencies_from_norms(frequency_norms(table.to(torch.float64), dim=1))


def key_frequencies(model: Model, task: Any | None = None, rule: str = "W_L_dft", *, p: int | None = None) -> list[int]:
    """Key frequencies of a model by a named rule (sorted ascending list of ints in 1..(p-1)/2).

    - ``"W_L_dft"`` (default): per-frequency norms of W_L along the output axis (F @ W_L^T, norm over neurons),
      selected by :func:`key_frequencies_from_norms` (largest-gap rule, ratio >= KEY_GAP_RATIO).
    - ``"W_L_online"`` (default during training): ``W_L_dft`` when its gap is clear, else the frequencies whose
      W_L energy is >= ONLINE_ENERGY_FACTOR x the mean energy (tracks frequencies while they emerge).
    - ``"W_E_norm"`` (TransformerLens demo): rows i > 0 of F @ W_E[:p] with norm > W_E_NORM_FRACTION * max_{i>0};
      k = ceil(i / 2).
    - ``"neuron_cluster"`` (original code): the distinct argmax frequencies of the neurons whose best 3x3-block
      fraction is >= NEURON_FVE_THRESHOLD; needs ``task`` (one forward pass over the grid).
    - ``"logits_dft"``: per-frequency norms of the logit table along the output axis c (norm over the p*p
      inputs), selected by the same largest-gap rule as ``W_L_dft``; needs ``task`` (one forward pass).
    """
    if p is None:
        if task is None:
            raise MeasureError("key_frequencies needs the task or p")
        p = task.p
    model, task, _ = on_cpu(model, task)  # a model on a device: read through a CPU copy (float64)
    if rule == "W_L_dft":
        return key_frequencies_from_norms(frequency_norms(neuron_logit_map(model, p), dim=1))
    if rule == "W_L_online":
        return key_frequencies_online(frequency_norms(neuron_logit_map(model, p), dim=1))
    if rule == "W_E_norm":
        comps = component_norms(number_embedding(model, p), dim=0)[1:]
        if float(comps.max()) <= 0:
            return []
        keep = torch.nonzero(comps > W_E_NORM_FRACTION * comps.max()).reshape(-1) + 1
        return sorted({(int(i) + 1) // 2 for i in keep})
    if rule in ("neuron_cluster", "logits_dft") and task is None:
        raise MeasureError(f"the {rule} rule needs the task (it runs the model over the grid)")
    if rule == "neuron_cluster":
        check_task(task)
        fracs = neuron_frequency_fractions(mlp_activations(model, task), p)
        best, arg = fracs.max(dim=0)
        return sorted({int(k) + 1 for k in arg[best >= NEURON_FVE_THRESHOLD]})
    if rule == "logits_dft":
        check_task(task)
        return key_frequencies_from_logits(logit_table(model, task))
    raise MeasureError(f"unknown key-frequency rule {rule!r}; known: {', '.join(KEY_FREQ_RULES)}")
