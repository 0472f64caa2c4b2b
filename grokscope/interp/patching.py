"""Activation patching: run the model on one input set while splicing in activations from another.

The setting (Vig et al. 2020; Meng et al. 2022; Wang et al. 2022, as described in Nanda's attribution-patching
post): a *clean* and a *corrupted* input set that differ in one detail (here: one operand of the modular task),
each with its own correct answer. The metric is the mean logit difference

    LD(run) = mean_i [ logits_i[clean_answer_i] - logits_i[corrupt_answer_i] ]

and patching a chosen slice of one named activation from the clean run into the corrupted run (``denoise``,
the default) gives the *recovered fraction*

    recovered = (LD(patched) - LD(corrupt)) / (LD(clean) - LD(corrupt))

which is 1 when the patched slice carries everything that distinguishes the clean run and 0 when it carries
nothing. ``direction="noise"`` patches corrupted activations into the clean run instead; the same formula then
reads 1 for "no effect" and 0 for "destroys the whole difference".

A *slice* of an activation is given by :class:`Site`: a hook name (TransformerLens names, e.g.
``blocks.0.hook_resid_pre``, ``blocks.0.attn.hook_z``, ``blocks.0.mlp.hook_post``; ``mlp.hook_post`` for the
MLP model) plus an optional position, head and unit indices (neurons / residual dimensions / d_head entries).
Sweeps patch many sites, one at a time, in batched forward passes and return :class:`PatchSweep` tables.

Everything is a pure function of a model and tensors; no files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from grokscope.models import Model, has_blocks

__all__ = [
    "PatchResult",
    "PatchSetup",
    "PatchSweep",
    "Site",
    "activation_layout",
    "logit_diff",
    "make_corruption",
    "patch_activation",
    "patch_sites",
    "run_caches",
    "site_mask",
    "ClusterPatching",
    "ClusterRow",
    "SWEEPS",
    "cluster_patching",
    "SiteGrid",
    "sweep",
    "sweep_grid",
    "sweep_heads",
    "sweep_neurons",
    "sweep_positions",
]


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class PatchSetup:
    """A clean and a corrupted input set of equal size, with each input's correct answer.

    ``clean_tokens``/``corrupt_tokens`` [n, n_ctx] int64; ``clean_answers``/``corrupt_answers`` [n] int64.
    ``description`` says how the corruption was made.
    """

    clean_tokens: Tensor
    corrupt_tokens: Tensor
    clean_answers: Tensor
    corrupt_answers: Tensor
    description: str = ""

    def __post_init__(self) -> None:
        n = self.clean_tokens.shape[0]
        shapes = [self.corrupt_tokens.shape[0], self.clean_answers.shape[0], self.corrupt_answers.shape[0]]
        if any(s != n for s in shapes) or self.clean_tokens.shape != self.corrupt_tokens.shape:
            raise ValueError(f"clean and corrupted inputs and answers must have matching sizes, got {n} and {shapes}")
        if n == 0:
            raise ValueError("a patching setup needs at least one input")

    @property
    def n(self) -> int:
        return int(self.clean_tokens.shape[0])

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "description": self.description}


def make_corruption(
    task: Any, n: int | None = 512, *, operand: str = "a", seed: int = 0, split: str = "all"
) -> PatchSetup:
    """Clean inputs (a, b) from ``task`` and corrupted inputs with one operand replaced by a different residue.

    ``operand`` "a" or "b" is the token replaced (positions 0 or 1) by a uniformly drawn different residue
    whose answer differs from the clean answer (pairs where no such residue exists are skipped).
    ``split`` picks the clean inputs from "all", "train" or "test" rows; ``n`` (None: all of them) are
    drawn without replacement with ``seed``. Answers are computed by looking the corrupted pair up in the task.
    """
    if operand not in ("a", "b"):
        raise ValueError(f"operand must be 'a' or 'b', got {operand!r}")
    rows = {"all": torch.arange(task.tokens.shape[0]), "train": task.train_idx, "test": task.test_idx}.get(split)
    if rows is None:
        raise ValueError(f"split must be 'all', 'train' or 'test', got {split!r}")
    p = task.p
    gen = torch.Generator().manual_seed(seed)
    rows = rows[torch.randperm(rows.numel(), generator=gen)]
    # lookup table: grid index a*p + b -> task row (or -1 where the formula is undefined)
    lookup = torch.full((p * p,), -1, dtype=torch.long)
    lookup[task.pair_index] = torch.arange(task.tokens.shape[0])
    pos = 0 if operand == "a" else 1
    clean_rows: list[int] = []
    corrupt_rows: list[int] = []
    want = rows.numel() if n is None else min(int(n), rows.numel())
    for r in rows.tolist():
        if len(clean_rows) >= want:
            break
        a, b = int(task.tokens[r, 0]), int(task.tokens[r, 1])
        cand = torch.randperm(p, generator=gen)
        for x in cand.tolist():
            if x == (a if pos == 0 else b):
                continue
            idx = x * p + b if pos == 0 else a * p + x
            j = int(lookup[idx])
            if j >= 0 and int(task.labels[j]) != int(task.labels[r]):
                clean_rows.append(r)
                corrupt_rows.append(j)
                break
    if not clean_rows:
        raise ValueError("no input has a corruption with a different answer")
    c, k = torch.tensor(clean_rows), torch.tensor(corrupt_rows)
    return PatchSetup(
        task.tokens[c], task.tokens[k], task.labels[c], task.labels[k],
        description=f"operand {operand} replaced by a random residue with a different answer; {len(c)} {split} inputs, seed {seed}",
    )


def logit_diff(logits: Tensor, clean_answers: Tensor, corrupt_answers: Tensor) -> Tensor:
    """Per-input logit difference logits[clean answer] - logits[corrupt answer]: [n] (logits [n, n_out])."""
    return logits.gather(1, clean_answers[:, None])[:, 0] - logits.gather(1, corrupt_answers[:, None])[:, 0]


# ----------------------------------------------------------------------------- sites


@dataclass(frozen=True)
class Site:
    """A slice of one named activation: ``hook`` plus optional ``position``, ``head`` and ``units``.

    ``units`` indexes the last axis (neurons of ``mlp.hook_post``/``hook_pre``, residual dimensions, d_head
    entries of ``attn.hook_z``); ``None`` means every entry of that axis. ``head`` applies to per-head
    activations (``attn.hook_q/k/v/z`` [batch, pos, head, d_head] and ``hook_pattern``/``hook_attn_scores``
    [batch, head, q, k], where ``position`` is the query position). Negative positions count from the end.
    """

    hook: str
    position: int | None = None
    head: int | None = None
    units: tuple[int, ...] | None = None
    label: str = ""

    def name(self) -> str:
        if self.label:
            return self.label
        parts = [self.hook]
        if self.position is not None:
            parts.append(f"pos {self.position}")
        if self.head is not None:
            parts.append(f"head {self.head}")
        if self.units is not None:
            parts.append(f"units {list(self.units)}" if len(self.units) <= 4 else f"{len(self.units)} units")
        return " ".join(parts)


def activation_layout(hook: str, ndim: int) -> tuple[str, ...]:
    """The axis names of an activation (batch first), from its hook name and number of dimensions."""
    last = hook.rsplit(".", 1)[-1]
    if last in ("hook_q", "hook_k", "hook_v", "hook_z", "hook_result") and ndim == 4:
        return ("batch", "pos", "head", "unit")
    if last in ("hook_pattern", "hook_attn_scores") and ndim == 4:
        return ("batch", "head", "pos", "key")
    if ndim == 3:
        return ("batch", "pos", "unit")
    if ndim == 2:
        return ("batch", "unit")
    raise ValueError(f"cannot interpret activation {hook!r} with {ndim} dimensions")


def site_mask(site: Site, shape: Sequence[int]) -> Tensor:
    """Boolean mask over an activation's non-batch axes (``shape`` includes the batch axis) selecting ``site``."""
    layout = activation_layout(site.hook, len(shape))
    mask = torch.ones(tuple(shape[1:]), dtype=torch.bool)
    for axis, name in enumerate(layout[1:]):
        size = shape[axis + 1]
        if name == "pos" and site.position is not None:
            keep = torch.zeros(size, dtype=torch.bool)
            keep[site.position] = True
        elif name == "head" and site.head is not None:
            keep = torch.zeros(size, dtype=torch.bool)
            keep[site.head] = True
        elif name == "unit" and site.units is not None:
            keep = torch.zeros(size, dtype=torch.bool)
            keep[list(site.units)] = True
        else:
            continue
        view = [1] * len(mask.shape)
        view[axis] = size
        mask = mask & keep.view(view)
    if site.position is not None and "pos" not in layout:
        # models without a position axis (the MLP model) read only one position: accept the last one
        if site.position != -1:
            raise ValueError(f"{site.hook} has no position axis; use position=None or -1")
    if site.head is not None and "head" not in layout:
        raise ValueError(f"{site.hook} has no head axis")
    return mask


# ----------------------------------------------------------------------------- running


def run_caches(model: Model, setup: PatchSetup) -> tuple[Tensor, dict[str, Tensor], Tensor, dict[str, Tensor]]:
    """(clean logits, clean cache, corrupted logits, corrupted cache), without gradients."""
    with torch.no_grad():
        lc, cc = model.run_with_cache(setup.clean_tokens)
        lk, ck = model.run_with_cache(setup.corrupt_tokens)
    return lc, cc, lk, ck


@dataclass(frozen=True)
class PatchResult:
    """One patch: the three mean logit differences and the recovered fraction."""

    site: str
    direction: str
    clean_logit_diff: float
    corrupt_logit_diff: float
    patched_logit_diff: float
    recovered: float

    def to_dict(self) -> dict[str, Any]:
        return {k: _num(v) for k, v in self.__dict__.items()}


def _num(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    return v


def _recovered(patched: Tensor, clean: float, corrupt: float) -> Tensor:
    den = clean - corrupt
    if abs(den) < 1e-12:
        return torch.full_like(patched, float("nan"))
    return (patched - corrupt) / den


def patch_sites(
    model: Model,
    setup: PatchSetup,
    sites: Sequence[Site],
    *,
    direction: str = "denoise",
    caches: tuple | None = None,
    max_rows: int = 4096,
) -> tuple[Tensor, float, float]:
    """Patch each site on its own; returns (patched mean logit differences [len(sites)], clean LD, corrupt LD).

    Sites sharing a hook are run together: the inputs are tiled ``m`` times (``m * n <= max_rows``) and copy ``j``
    gets site ``j``'s patch, so a sweep of 512 neurons costs 512 forward passes' arithmetic in a few calls.
    """
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    lc, cc, lk, ck = caches if caches is not None else run_caches(model, setup)
    ld_clean = float(logit_diff(lc, setup.clean_answers, setup.corrupt_answers).mean())
    ld_corrupt = float(logit_diff(lk, setup.clean_answers, setup.corrupt_answers).mean())
    source, target_tokens = (cc, setup.corrupt_tokens) if direction == "denoise" else (ck, setup.clean_tokens)
    n = setup.n
    out = torch.empty(len(sites), dtype=torch.float64)
    by_hook: dict[str, list[int]] = {}
    for i, s in enumerate(sites):
        if s.hook not in source:
            known = ", ".join(sorted(source))
            raise ValueError(f"no activation named {s.hook!r}; known: {known}")
        by_hook.setdefault(s.hook, []).append(i)
    for hook, idx in by_hook.items():
        src = source[hook]
        masks = torch.stack([site_mask(sites[i], src.shape) for i in idx])  # [m, *shape[1:]]
        per = max(1, max_rows // n)
        for start in range(0, len(idx), per):
            chunk = masks[start : start + per]
            m = chunk.shape[0]

            def fn(x: Tensor, name: str, chunk=chunk, m=m, src=src) -> Tensor:
                xv = x.reshape(m, n, *x.shape[1:])
                return torch.where(chunk[:, None], src[None], xv).reshape(x.shape)

            with torch.no_grad():
                logits = model.run_with_hooks(target_tokens.repeat(m, 1), fwd_hooks=[(hook, fn)])
            ld = logit_diff(logits, setup.clean_answers.repeat(m), setup.corrupt_answers.repeat(m))
            out[[idx[start + j] for j in range(m)]] = ld.reshape(m, n).mean(dim=1).to(torch.float64)
    return out, ld_clean, ld_corrupt


def patch_activation(
    model: Model,
    setup: PatchSetup,
    hook: str,
    *,
    position: int | None = None,
    head: int | None = None,
    units: Iterable[int] | int | None = None,
    direction: str = "denoise",
) -> PatchResult:
    """Patch one slice of activation ``hook`` (see :class:`Site`) and report the recovered fraction."""
    if isinstance(units, int):
        units = (units,)
    site = Site(hook, position, head, None if units is None else tuple(int(u) for u in units))
    ld, clean, corrupt = patch_sites(model, setup, [site], direction=direction)
    rec = float(_recovered(ld, clean, corrupt)[0])
    return PatchResult(site.name(), direction, clean, corrupt, float(ld[0]), rec)


# ----------------------------------------------------------------------------- sweeps


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
            "values": [[_num(float(v)) for v in row] for row in self.values.reshape(len(self.row_labels), -1)],
            "row_labels": self.row_labels,
            "col_labels": self.col_labels,
            "clean_logit_diff": _num(self.clean_logit_diff),
            "corrupt_logit_diff": _num(self.corrupt_logit_diff),
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
    has_blocks = hasattr(model, "blocks")
    if kind == "heads":
        if not has_blocks:
            raise ValueError("this model has no attention heads")
        hook, n_heads = f"blocks.{layer}.attn.hook_z", model.cfg.n_heads
        sites = [Site(hook, pos, h) for pos in range(n_ctx) for h in range(n_heads)]
        return SiteGrid(kind, hook, sites, (n_ctx, n_heads), ("position", "head"),
                        [f"pos {i}" for i in range(n_ctx)], [f"head {h}" for h in range(n_heads)])
    if kind in ("neurons", "neurons_pre"):
        act = "hook_post" if kind == "neurons" else "hook_pre"
        hook = f"blocks.{layer}.mlp.{act}" if has_blocks else f"mlp.{act}"
        pos = position if has_blocks else None
        d_mlp = model.cfg.d_mlp
        sites = [Site(hook, pos, None, (i,)) for i in range(d_mlp)]
        return SiteGrid(kind, hook, sites, (d_mlp, 1), ("neuron",), [str(i) for i in range(d_mlp)], [])
    if kind == "positions":
        if hooks is None:
            if has_blocks:
                hooks = []
                for i in range(_n_layers(model)):
                    hooks += [f"blocks.{i}.hook_resid_pre", f"blocks.{i}.hook_attn_out", f"blocks.{i}.hook_mlp_out"]
                hooks.append(f"blocks.{_n_layers(model) - 1}.hook_resid_post")
            else:
                hooks = ["hook_embed"]
        n_pos = n_ctx if has_blocks else 2
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
    secs = time.perf_counter() - t0
    return PatchSweep(kind, grid.hook, grid.axes, _recovered(ld, clean, corrupt).reshape(grid.shape), grid.row_labels,
                      grid.col_labels, clean, corrupt, direction, secs, setup.n)


def sweep_heads(model: Model, setup: PatchSetup, *, layer: int = 0, direction: str = "denoise") -> PatchSweep:
    """Patch ``blocks.{layer}.attn.hook_z`` one (position, head) at a time: a [pos, head] table."""
    return sweep(model, setup, "heads", layer=layer, direction=direction)


def sweep_neurons(model: Model, setup: PatchSetup, *, layer: int = 0, position: int = -1,
                  pre: bool = False, direction: str = "denoise") -> PatchSweep:
    """Patch every MLP neuron (``mlp.hook_post``, or ``hook_pre`` with ``pre``) at ``position`` one at a time: [d_mlp]."""
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
                "rows": [{k: _num(v) for k, v in r.__dict__.items()} for r in self.rows]}

    def table(self) -> str:
        lines = [f"neuron clusters ({self.hook}; a neuron joins frequency k when >= {self.threshold:.0%} of its variance "
                 f"is in k's 3x3 block) vs {self.n_random} random sets of equal size:",
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
    from grokscope.measures.progress import (
        NEURON_FVE_THRESHOLD,
        mlp_activations,
        neuron_frequency_fractions,
        post_hook_name,
    )

    thr = NEURON_FVE_THRESHOLD if threshold is None else threshold
    hook = post_hook_name(model)
    pos = -1 if hasattr(model, "blocks") else None
    fr = neuron_frequency_fractions(mlp_activations(model, task), task.p)
    best, arg = fr.max(dim=0)
    freq = torch.where(best >= thr, arg + 1, torch.zeros_like(arg))
    d_mlp = freq.numel()
    groups: list[tuple[int | str, list[int]]] = [(k, torch.nonzero(freq == k).reshape(-1).tolist()) for k in sorted(set(key_freqs))]
    union = sorted(i for _, idx in groups for i in idx)
    groups.append(("all keys", union))
    gen = torch.Generator().manual_seed(seed)
    sites: list[Site] = []
    spans: list[tuple[int, int]] = []
    for _, idx in groups:
        start = len(sites)
        sites.append(Site(hook, pos, None, tuple(idx)))
        for _ in range(n_random):
            sites.append(Site(hook, pos, None, tuple(torch.randperm(d_mlp, generator=gen)[: len(idx)].tolist())))
        spans.append((start, len(sites)))
    ld, clean, corrupt = patch_sites(model, setup, sites, direction=direction)
    rec = _recovered(ld, clean, corrupt)
    rows = []
    for (name, idx), (a, b) in zip(groups, spans):
        r, rand = float(rec[a]), rec[a + 1 : b]
        rows.append(ClusterRow(name, len(idx), r, float(rand.mean()) if n_random else float("nan"),
                               float(rand.max()) if n_random else float("nan"),
                               float((rand < r).to(torch.float64).mean()) if n_random else float("nan")))
    return ClusterPatching(hook, thr, n_random, rows)
