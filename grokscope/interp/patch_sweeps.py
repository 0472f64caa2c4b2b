"""Patching sweeps: every site of a named grid (heads, neurons, positions) one at a time, and the neurons of each
key-frequency cluster together against random neuron sets of the same size (see :mod:`.patching` for the metric).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from grokscope.interp.patching import PatchSetup, Site, finite_or_none, patch_sites, recovered_fraction
from grokscope.measures import NEURON_FVE_THRESHOLD, mlp_activations, neuron_frequency_fractions, post_hook_name
from grokscope.models import Model, has_blocks

__all__ = ["SWEEPS", "ClusterPatching", "ClusterRow", "PatchSweep", "SiteGrid", "cluster_patching", "sweep",
           "sweep_grid", "sweep_heads", "sweep_neurons", "sweep_positions"]


@dataclass(frozen=True)
class PatchSweep:
    """Recovered fraction for a grid of sites: ``values`` has shape ``shape`` with axes ``axes``.

    ``rows``/``cols`` label the axes of a 2-D table (or ``rows`` alone for 1-D). ``seconds`` is wall time.
    """

    kind: str
    hook: str
    axes: tuple[str, ...]
    values: Tensor  # recovered fractions, float64
    row_labels: list[str]
    col_labels: list[str]
    clean_logit_diff: float
    corrupt_logit_diff: float
    direction: str
    seconds: float
    n_inputs: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "hook": self.hook,
            "axes": list(self.axes),
            "values": [[finite_or_none(float(v)) for v in row]
                       for row in self.values.reshape(len(self.row_labels), -1)],
            "row_labels": self.row_labels,
            "col_labels": self.col_labels,
            "clean_logit_diff": finite_or_none(self.clean_logit_diff),
            "corrupt_logit_diff": finite_or_none(self.corrupt_logit_diff),
            "direction": self.direction,
            "seconds": self.seconds,
            "n_inputs": self.n_inputs,
            **({"extra": self.extra} if self.extra else {}),
        }

    def table(self, digits: int = 3) -> str:
        """A plain-text table (rows x columns) to paste."""
        vals = self.values.reshape(len(self.row_labels), -1)
        w0 = max([len(r) for r in self.row_labels] + [len(self.axes[0])])
        cols = self.col_labels or ["recovered"]
        ws = [max(len(c), digits + 4) for c in cols]
        head = f"{self.axes[0]:<{w0}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cols, ws))
        lines = [head, "-" * len(head)]
        for r, row in zip(self.row_labels, vals):
            lines.append(f"{r:<{w0}}  " + "  ".join(f"{float(v):>{w}.{digits}f}" for v, w in zip(row, ws)))
        return "\n".join(lines)


def _n_layers(model: Model) -> int:
    return len(model.blocks) if has_blocks(model) else 0


@dataclass(frozen=True)
class SiteGrid:
    """The sites of a sweep laid out as a table: ``sites`` in row-major order of ``shape``."""

    kind: str
    hook: str
    sites: list[Site]
    shape: tuple[int, int]
    axes: tuple[str, ...]
    row_labels: list[str]
    col_labels: list[str]


def sweep_grid(model: Model, kind: str, *, n_ctx: int = 3, layer: int = 0, position: int = -1,
               hooks: Sequence[str] | None = None) -> SiteGrid:
    """Sites of a named sweep: ``heads`` (attn.hook_z, [pos, head]), ``neurons`` (mlp.hook_post at ``position``,
    [d_mlp]), ``neurons_pre`` (mlp.hook_pre), ``positions`` (whole activations per position, [hook, pos])."""
    blocks = has_blocks(model)
    if kind == "heads":
        if not blocks:
            raise ValueError("this model has no attention heads")
        hook, n_heads = f"blocks.{layer}.attn.hook_z", model.cfg.n_heads
        sites = [Site(hook, pos, h) for pos in range(n_ctx) for h in range(n_heads)]
        return SiteGrid(kind, hook, sites, (n_ctx, n_heads), ("position", "head"),
                        [f"pos {i}" for i in range(n_ctx)], [f"head {h}" for h in range(n_heads)])
    if kind in ("neurons", "neurons_pre"):
        act = "hook_post" if kind == "neurons" else "hook_pre"
        hook = f"blocks.{layer}.mlp.{act}" if blocks else f"mlp.{act}"
        pos = position if blocks else None
        d_mlp = model.cfg.d_mlp
        sites = [Site(hook, pos, None, (i,)) for i in range(d_mlp)]
        return SiteGrid(kind, hook, sites, (d_mlp, 1), ("neuron",), [str(i) for i in range(d_mlp)], [])
    if kind == "positions":
        if hooks is None:
            if blocks:
                hooks = []
                for i in range(_n_layers(model)):
                    hooks += [f"blocks.{i}.hook_resid_pre", f"blocks.{i}.hook_attn_out", f"blocks.{i}.hook_mlp_out"]
                hooks.append(f"blocks.{_n_layers(model) - 1}.hook_resid_post")
            else:
                hooks = ["hook_embed"]
        n_pos = n_ctx if blocks else 2
        sites = [Site(h, pos) for h in hooks for pos in range(n_pos)]
        return SiteGrid(kind, ",".join(hooks), sites, (len(hooks), n_pos), ("activation", "position"),
                        list(hooks), [f"pos {i}" for i in range(n_pos)])
    raise ValueError(f"unknown sweep {kind!r}; known: heads, neurons, neurons_pre, positions")


SWEEPS = ("heads", "neurons", "neurons_pre", "positions")


def sweep(model: Model, setup: PatchSetup, kind: str, *, layer: int = 0, position: int = -1,
          hooks: Sequence[str] | None = None, direction: str = "denoise") -> PatchSweep:
    """Activation patching of every site of a named sweep (see :func:`sweep_grid`), one site at a time.

    ``seconds`` includes the clean and corrupted forward passes."""
    grid = sweep_grid(model, kind, n_ctx=setup.clean_tokens.shape[1], layer=layer, position=position, hooks=hooks)
    t0 = time.perf_counter()
    ld, clean, corrupt = patch_sites(model, setup, grid.sites, direction=direction)
    if ld.is_cuda:  # the kernels run asynchronously: wait for them before reading the clock
        torch.cuda.synchronize(ld.device)
    secs = time.perf_counter() - t0
    values = recovered_fraction(ld, clean, corrupt).reshape(grid.shape)
    return PatchSweep(kind, grid.hook, grid.axes, values, grid.row_labels, grid.col_labels, clean, corrupt, direction,
                      secs, setup.n)


def sweep_heads(model: Model, setup: PatchSetup, *, layer: int = 0, direction: str = "denoise") -> PatchSweep:
    """Patch ``blocks.{layer}.attn.hook_z`` one (position, head) at a time: a [pos, head] table."""
    return sweep(model, setup, "heads", layer=layer, direction=direction)


def sweep_neurons(model: Model, setup: PatchSetup, *, layer: int = 0, position: int = -1,
                  pre: bool = False, direction: str = "denoise") -> PatchSweep:
    """Patch every MLP neuron (``mlp.hook_post``, or ``hook_pre`` with ``pre``) at ``position`` one at a time:
    [d_mlp]."""
    return sweep(model, setup, "neurons_pre" if pre else "neurons", layer=layer, position=position, direction=direction)


def sweep_positions(model: Model, setup: PatchSetup, *, hooks: Sequence[str] | None = None,
                    direction: str = "denoise") -> PatchSweep:
    """Patch whole activations one position at a time: a [hook, position] table.

    Default hooks: every block's ``hook_resid_pre``, ``hook_attn_out``, ``hook_mlp_out`` and the last
    ``hook_resid_post`` (transformer); ``hook_embed`` per operand position for the MLP model.
    """
    return sweep(model, setup, "positions", hooks=hooks, direction=direction)


# ----------------------------------------------------------------------------- frequency clusters


@dataclass(frozen=True)
class ClusterRow:
    frequency: int | str
    size: int
    recovered: float
    random_mean: float
    random_max: float
    random_beaten: float  # fraction of the random sets with a lower recovered fraction


@dataclass(frozen=True)
class ClusterPatching:
    """Patching each key frequency's neuron cluster jointly against random neuron sets of the same size."""

    hook: str
    threshold: float
    n_random: int
    rows: list[ClusterRow]

    def to_dict(self) -> dict[str, Any]:
        return {"hook": self.hook, "threshold": self.threshold, "n_random": self.n_random,
                "rows": [{k: finite_or_none(v) for k, v in r.__dict__.items()} for r in self.rows]}

    def table(self) -> str:
        lines = [f"neuron clusters ({self.hook}; a neuron joins frequency k when >= {self.threshold:.0%} of its "
                 f"variance is in k's 3x3 block) vs {self.n_random} random sets of equal size:",
                 f"{'cluster':>10} {'size':>5} {'recovered':>10} {'random mean':>12} {'random max':>11} {'beats':>6}"]
        for r in self.rows:
            lines.append(f"{str(r.frequency):>10} {r.size:>5} {r.recovered:>10.4f} {r.random_mean:>12.4f} "
                         f"{r.random_max:>11.4f} {r.random_beaten:>6.0%}")
        return "\n".join(lines)


def cluster_patching(
    model: Model, task: Any, setup: PatchSetup, key_freqs: Iterable[int], *, n_random: int = 100, seed: int = 0,
    direction: str = "denoise", threshold: float | None = None,
) -> ClusterPatching:
    """Patch the last MLP's neurons of each key-frequency cluster (at the last position) together, and
    ``n_random`` random neuron sets of the same size; also the union of all key clusters."""
    thr = NEURON_FVE_THRESHOLD if threshold is None else threshold
    hook = post_hook_name(model)
    pos = -1 if has_blocks(model) else None
    fractions = neuron_frequency_fractions(mlp_activations(model, task), task.p)
    best, arg = fractions.max(dim=0)
    freq = torch.where(best >= thr, arg + 1, torch.zeros_like(arg))
    d_mlp = freq.numel()
    groups: list[tuple[int | str, list[int]]] = [(k, torch.nonzero(freq == k).reshape(-1).tolist())
                                                 for k in sorted(set(key_freqs))]
    union = sorted(i for _, idx in groups for i in idx)
    groups.append(("all keys", union))
    gen = torch.Generator().manual_seed(seed)  # random sets drawn on the CPU: the same sets on every device
    sites: list[Site] = []
    spans: list[tuple[int, int]] = []
    for _, idx in groups:
        start = len(sites)
        sites.append(Site(hook, pos, None, tuple(idx)))
        for _ in range(n_random):
            draw = torch.randperm(d_mlp, generator=gen, device="cpu")[: len(idx)]
            sites.append(Site(hook, pos, None, tuple(draw.tolist())))
        spans.append((start, len(sites)))
    ld, clean, corrupt = patch_sites(model, setup, sites, direction=direction)
    rec = recovered_fraction(ld, clean, corrupt)
    rows = []
    for (name, idx), (a, b) in zip(groups, spans):
        r, rand = float(rec[a]), rec[a + 1 : b]
        rows.append(ClusterRow(name, len(idx), r, float(rand.mean()) if n_random else float("nan"),
                               float(rand.max()) if n_random else float("nan"),
                               float((rand < r).to(torch.float64).mean()) if n_random else float("nan")))
    return ClusterPatching(hook, thr, n_random, rows)
