"""The figures' view of a run in its task's group basis (issue 21): which basis (``analysis.json``'s ``basis``
block, else the one detected from the task's table, :func:`grokscope.measures.bases.task_basis`), and the weights
and the (a, b) grid read through its relabelling, so the circuit figures draw over Z_n with frequencies named in
that basis and the basis in their titles.

The plain additive basis of a+b (every order the identity) is ``None`` here: the figures then take their additive
code path unchanged, so addition's figures are byte for byte what they were. Views (numpy float64): W_E rows
``a_order`` [n, d_model]; W_L columns ``c_order`` [d_mlp, n]; logits [n, n, n] (group input (i, j) = tokens
(a_order[i], b_order[j]), output c_order[m]); activations [n, n, d_mlp]. A mixture (kind "multi") gets one basis per
operation (:func:`operation_bases`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from grokscope import measures
from grokscope.figures.data import FigureUnavailable, analysis, safe_meta, weights
from grokscope.measures.bases import (
    GroupBasis,
    group_basis_for,
    group_block_fractions,
    group_frequency_norms,
    group_neuron_energy,
    is_identity,
    task_basis,
)
from grokscope.store.run import Run

__all__ = [
    "FigureBasis", "basis_label", "basis_suffix", "component_freqs", "component_labels", "group_keys",
    "group_neuron_fve", "group_wave_coefs", "measures_suffix", "operation_bases", "require_keys", "run_basis",
    "view_grid", "view_weights",
]


@dataclass(frozen=True, eq=False)
class FigureBasis:
    """A group basis as the figures use it: ``name`` ("additive" or "dlog"), the group order ``n``, the generator
    and shift, the three orders ([n] int64 numpy), ``exact`` and where it came from (``source``)."""

    name: str
    n: int
    generator: int | None
    shift: int
    a_order: np.ndarray
    b_order: np.ndarray
    c_order: np.ndarray
    exact: bool
    source: str


def basis_label(basis: FigureBasis) -> str:
    """'discrete-log basis, g = 5', 'discrete-log basis of t + 1, g = 2', 'additive basis, relabelled'."""
    if basis.name == "dlog":
        text = "discrete-log basis" + (f" of t + {basis.shift}" if basis.shift else "") + f", g = {basis.generator}"
    else:
        text = "additive basis, relabelled"
    return text if basis.exact else text + "; output side only"


def basis_suffix(basis: FigureBasis | None) -> str:
    """' (discrete-log basis, g = 5)' for a title; '' for the plain additive basis (addition's titles unchanged)."""
    return "" if basis is None else f" ({basis_label(basis)})"


def _from_dict(block: dict[str, Any], p: int) -> FigureBasis | None:
    orders = [np.asarray(block.get(k), dtype=np.int64) for k in ("a_order", "b_order", "c_order")]
    n = int(block["n"])
    if any(o.shape != (n,) for o in orders):
        return None
    if block.get("name") == "additive" and n == p and all(np.array_equal(o, np.arange(p)) for o in orders):
        return None
    a_order, b_order, c_order = orders
    return FigureBasis(str(block["name"]), n, block.get("generator"), int(block.get("shift") or 0), a_order, b_order,
                       c_order, exact=bool(block.get("exact", True)), source="analysis.json")


def _from_group(basis: GroupBasis | None, p: int, source: str) -> FigureBasis | None:
    if basis is None or is_identity(basis, p):
        return None
    return FigureBasis(basis.name, basis.n, basis.generator, basis.shift, basis.a_order.numpy(),
                       basis.b_order.numpy(), basis.c_order.numpy(), exact=basis.exact, source=source)


@lru_cache(maxsize=64)
def _task_basis_cached(run_dir: str, config_json: str) -> FigureBasis | None:
    run = Run(run_dir)
    try:
        found, _ = task_basis(run.task())
    except (ValueError, measures.MeasureError):
        return None
    return _from_group(found, run.config.task.p, "the task's table")


def run_basis(run: Run) -> FigureBasis | None:
    """The run's group basis for the figures: ``analysis.json``'s (it may be one asked for with ``--basis``), else
    the task's own; None for the plain additive basis, a task without one, or a task that is not modular."""
    if run.config.task.kind != "modular":
        return None
    data = analysis(run)
    block = data.get("basis") if data is not None else None
    if isinstance(block, dict) and "n" in block:
        if block.get("name") is None or "a_order" not in block:
            return None
        return _from_dict(block, run.config.task.p)
    return _task_basis_cached(str(run.dir.resolve()), run.config.to_json())


def operation_bases(run: Run) -> list[tuple[str, FigureBasis | None, str, str]]:
    """A mixture's operations (kind "multi"), each with its own table's basis: (formula, basis or None for the
    plain additive one or none, the basis in words, the reason)."""
    task = run.task()
    p = run.config.task.p
    out = []
    for i, formula in enumerate(getattr(task, "group_names", ()) or ()):
        rows = torch.nonzero(task.groups == i).reshape(-1)
        table = torch.full((p * p,), -1, dtype=torch.int64)
        table[task.tokens[rows, 0] * p + task.tokens[rows, 2]] = task.labels[rows].to(torch.int64)
        try:
            found, why = group_basis_for(table.reshape(p, p), p)
        except measures.MeasureError as e:
            found, why = None, str(e)
        view = _from_group(found, p, f"the table of {formula}")
        plain = "additive basis" if found is None or found.exact else "additive basis; output side only"
        label = basis_label(view) if view is not None else plain if found is not None else (
            "no group basis: tokens in order")
        out.append((formula, view, label, why))
    return out


# --------------------------------------------------------------------------- names of the components over Z_n


def component_labels(n: int) -> list[str]:
    """Names of the rows of ``real_fourier_basis(n)``: const, cos 1, sin 1, ..., and for even n 'cos n/2' last."""
    labels = ["const"]
    for k in range(1, (n + 1) // 2):
        labels += [f"cos {k}", f"sin {k}"]
    return labels + ([f"cos {n // 2}"] if n % 2 == 0 and n >= 2 else [])


def component_freqs(n: int) -> list[int]:
    """The frequency (0 for the constant) of each row of ``real_fourier_basis(n)``."""
    return [0] + [k for k in range(1, (n + 1) // 2) for _ in (0, 1)] + ([n // 2] if n % 2 == 0 and n >= 2 else [])


# --------------------------------------------------------------------------- views


def view_weights(run: Run, step: int, basis: FigureBasis) -> tuple[np.ndarray, np.ndarray]:
    """(W_E[a_order] [n, d_model], W_L[:, c_order] [d_mlp, n]) of checkpoint ``step``."""
    w = weights(run, step)
    return w.W_E[basis.a_order], w.W_L[:, basis.c_order]


def view_grid(logits: np.ndarray, post: np.ndarray | None, basis: FigureBasis
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """The grid [p, p, p] (and activations [p, p, d]) of (a, b) read at the group inputs: [n, n, n] (i, j, m) and
    [n, n, d] (i, j)."""
    a, b, c = basis.a_order, basis.b_order, basis.c_order
    view = logits[a][:, b][:, :, c]
    return view, (None if post is None else post[a][:, b])


def group_neuron_fve(post: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron of ``post`` [n, n, d_mlp] over the group grid: (best frequency k in 1..n//2, the share of its
    centred variance in the block {const, cos k, sin k}^2), as the analysis in the basis computes it."""
    acts = torch.from_numpy(np.ascontiguousarray(post)).double().reshape(n * n, -1)
    fracs = group_block_fractions(group_neuron_energy(acts, n), n, quadratic=False).numpy()  # [n//2, d]
    best = fracs.argmax(axis=0)
    return best + 1, fracs[best, np.arange(fracs.shape[1])]


def group_wave_coefs(view: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares coefficients (alpha_k, beta_k), k = 1..n//2, of cos / sin(w_k (i + j - m)), w_k = 2 pi k / n, in
    a group logit table [n, n, n] centred over m (the waves are orthogonal: <L, cos_k> / ||cos_k||^2 with
    ||cos_k||^2 = n^3 / 2, n^3 for the Nyquist cosine, whose sine is 0)."""
    centred = view.astype(np.float64) - view.mean(axis=2, keepdims=True)
    i = np.arange(n)
    d = (i[:, None, None] + i[None, :, None] - i[None, None, :]) % n
    g = np.bincount(d.reshape(-1), weights=centred.reshape(-1), minlength=n)
    alpha, beta = np.zeros(n // 2), np.zeros(n // 2)
    for k in range(1, n // 2 + 1):
        w = 2 * np.pi * k * np.arange(n) / n
        norm = n**3 / (1.0 if 2 * k == n else 2.0)
        alpha[k - 1] = float(np.cos(w) @ g) / norm
        beta[k - 1] = 0.0 if 2 * k == n else float(np.sin(w) @ g) / norm
    return alpha, beta


def group_keys(run: Run, basis: FigureBasis, step: int) -> tuple[list[int], str]:
    """Key frequencies over Z_n: ``analysis.json``'s when it was written in this basis, else the W_L_dft rule on
    the viewed W_L of checkpoint ``step``."""
    data = analysis(run)
    block = data.get("basis") if data is not None else None
    if data is not None and isinstance(block, dict) and block.get("name") == basis.name and block.get("n") == basis.n:
        keys = data.get("key_frequencies")
        if isinstance(keys, list) and all(isinstance(k, int) for k in keys):
            return sorted(keys), f"analysis.json ({data.get('key_freq_rule', '?')}, {basis_label(basis)})"
    _, w_l = view_weights(run, step, basis)
    norms = group_frequency_norms(torch.from_numpy(np.ascontiguousarray(w_l)), dim=1)
    return measures.key_frequencies_from_norms(norms), f"W_L_dft at step {step} ({basis_label(basis)})"


def require_keys(keys: list[int]) -> list[int]:
    if not keys:
        raise FigureUnavailable("no key frequencies found (the run has not formed a Fourier circuit)")
    return keys


def measures_suffix(run: Run) -> str:
    """The basis of a run's recorded progress measures, for a title: '' for the plain additive basis; else
    ' (discrete-log basis, g = 5)' when the run's meta records the basis its measures used (key ``basis``: a name,
    or a JSON object with ``name``), or a note that it does not."""
    basis = run_basis(run)
    if basis is None:
        return ""
    recorded = safe_meta(run).get("basis")
    if recorded:
        try:
            parsed = json.loads(recorded)
        except ValueError:
            parsed = recorded
        name = parsed.get("name") if isinstance(parsed, dict) else parsed
        if name == basis.name:
            return basis_suffix(basis)
        if name == "additive":
            return f" (measures in the additive basis; the task's own: {basis_label(basis)})"
    return f" (the task's basis: {basis_label(basis)}; the run does not record the basis of its measures)"
