"""Attribution patching: a first-order estimate of every activation-patching result from a few passes.

For the metric M = mean logit difference (see :mod:`grokscope.interp.patching`) and an activation A, patching
a slice S of A from the clean run into the corrupted run changes M by approximately

    delta M(S) ~= sum_{i in batch, e in S} (A_clean - A_corrupt)[i, e] * dM/dA[i, e] |_corrupt

(the gradient taken in the corrupted run). One clean forward pass (cache), one corrupted forward pass and one
backward pass give the estimate for *every* slice of *every* activation at once. ``direction="noise"`` uses
the gradient of the clean run and the difference (A_corrupt - A_clean). Results are reported in the same unit
as activation patching: recovered fraction = (M(corrupt) + delta M - M(corrupt)) / (M(clean) - M(corrupt)) for
denoising and 1 + delta M / (M(clean) - M(corrupt)) for noising.

The estimate is exact when the metric is linear in the patched activation (e.g. the MLP post-activations of a
one-layer model: the logits are a linear function of them); elsewhere it is a tangent-line approximation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from grokscope.interp.patch_sweeps import PatchSweep, sweep, sweep_grid
from grokscope.interp.patching import PatchSetup, Site, finite_or_none, logit_diff, site_mask
from grokscope.models import Model

__all__ = [
    "Attribution",
    "AttributionComparison",
    "attribution_patching",
    "attribution_sweep",
    "compare_with_activation_patching",
    "pearson",
    "spearman",
]


@dataclass(frozen=True)
class Attribution:
    """Attribution scores of every hooked activation.

    ``scores[hook]`` has the activation's shape without the batch axis: the estimated change of the mean logit
    difference from patching that one element (already summed over the batch). ``seconds``: wall time of the
    passes (clean forward, corrupted forward + backward).
    """

    scores: dict[str, Tensor]
    clean_logit_diff: float
    corrupt_logit_diff: float
    direction: str
    seconds: float
    n_inputs: int

    @property
    def device(self) -> torch.device:
        """Where the scores are (the model's device; the CPU when there are none)."""
        return next(iter(self.scores.values())).device if self.scores else torch.device("cpu")

    def delta(self, sites: Sequence[Site]) -> Tensor:
        """Estimated change of the mean logit difference for each site: [len(sites)] float64."""
        out = torch.empty(len(sites), dtype=torch.float64, device=self.device)
        by_hook: dict[str, list[int]] = {}
        for i, s in enumerate(sites):
            if s.hook not in self.scores:
                raise ValueError(f"no activation named {s.hook!r}; known: {', '.join(sorted(self.scores))}")
            by_hook.setdefault(s.hook, []).append(i)
        for hook, idx in by_hook.items():
            sc = self.scores[hook]
            masks = torch.stack([site_mask(sites[i], (1, *sc.shape), sc.device) for i in idx]).reshape(len(idx), -1)
            out[idx] = masks.to(torch.float64) @ sc.reshape(-1)
        return out

    def recovered(self, sites: Sequence[Site]) -> Tensor:
        """Estimated recovered fraction of each site (same convention as activation patching)."""
        den = self.clean_logit_diff - self.corrupt_logit_diff
        if abs(den) < 1e-12:
            return torch.full((len(sites),), float("nan"), dtype=torch.float64, device=self.device)
        d = self.delta(sites) / den
        return d if self.direction == "denoise" else 1.0 + d

    def to_dict(self) -> dict[str, Any]:
        return {
            "hooks": {h: list(s.shape) for h, s in self.scores.items()},
            "clean_logit_diff": self.clean_logit_diff,
            "corrupt_logit_diff": self.corrupt_logit_diff,
            "direction": self.direction,
            "seconds": self.seconds,
            "n_inputs": self.n_inputs,
        }


def attribution_patching(
    model: Model, setup: PatchSetup, *, direction: str = "denoise", hooks: Sequence[str] | None = None
) -> Attribution:
    """Attribution scores for every hooked activation (or only ``hooks``) from one forward pass on the source
    inputs and one forward + backward pass on the target inputs (corrupted ones for ``denoise``)."""
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    t0 = time.perf_counter()
    src_tokens, tgt_tokens = ((setup.clean_tokens, setup.corrupt_tokens) if direction == "denoise"
                              else (setup.corrupt_tokens, setup.clean_tokens))
    with torch.no_grad():
        src_logits, src_cache = model.run_with_cache(src_tokens)
    names = list(src_cache) if hooks is None else list(hooks)
    for h in names:
        if h not in src_cache:
            raise ValueError(f"no activation named {h!r}; known: {', '.join(sorted(src_cache))}")
    kept: dict[str, Tensor] = {}

    def keep(x: Tensor, name: str) -> Tensor | None:
        if not x.requires_grad:  # frozen weights: make the activation a leaf of the graph
            x = x.detach().requires_grad_(True)
            kept[name] = x
            return x
        kept[name] = x
        return None

    with torch.enable_grad():
        tgt_logits = model.run_with_hooks(tgt_tokens, fwd_hooks=[(h, keep) for h in names])
        metric = logit_diff(tgt_logits, setup.clean_answers, setup.corrupt_answers).mean()
        order = [h for h in names if h in kept and kept[h].requires_grad]
        grads = torch.autograd.grad(metric, [kept[h] for h in order], allow_unused=True)
    scores: dict[str, Tensor] = {}
    for h, g in zip(order, grads):
        a = kept[h].detach()
        diff = src_cache[h] - a
        diff = torch.where(torch.isfinite(diff), diff, torch.zeros_like(diff))  # masked -inf attention scores
        if g is None:
            g = torch.zeros_like(a)
        scores[h] = (diff * g).sum(dim=0).to(torch.float64)
    if metric.is_cuda:  # the kernels run asynchronously: wait for them before reading the clock
        torch.cuda.synchronize(metric.device)
    secs = time.perf_counter() - t0
    with torch.no_grad():
        ld_src = float(logit_diff(src_logits, setup.clean_answers, setup.corrupt_answers).mean())
        ld_tgt = float(metric)
    clean, corrupt = (ld_src, ld_tgt) if direction == "denoise" else (ld_tgt, ld_src)
    return Attribution(scores, clean, corrupt, direction, secs, setup.n)


def attribution_sweep(model: Model, attr: Attribution, kind: str, *, layer: int = 0, position: int = -1,
                      n_ctx: int = 3, hooks: Sequence[str] | None = None) -> PatchSweep:
    """The table of a named sweep (``heads``, ``neurons``, ``neurons_pre``, ``positions``) estimated from ``attr``."""
    grid = sweep_grid(model, kind, n_ctx=n_ctx, layer=layer, position=position, hooks=hooks)
    vals = attr.recovered(grid.sites).reshape(grid.shape)
    return PatchSweep(kind, grid.hook, grid.axes, vals, grid.row_labels, grid.col_labels, attr.clean_logit_diff,
                      attr.corrupt_logit_diff, attr.direction, attr.seconds, attr.n_inputs, {"method": "attribution"})


# ----------------------------------------------------------------------------- agreement


def pearson(x: Tensor, y: Tensor) -> float:
    """Pearson correlation of two flat tensors (NaN entries of either dropped); NaN if either is constant."""
    x, y = x.reshape(-1).to(torch.float64), y.reshape(-1).to(torch.float64)
    ok = torch.isfinite(x) & torch.isfinite(y)
    x, y = x[ok], y[ok]
    if x.numel() < 2:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    den = float(x.norm() * y.norm())
    return float((x * y).sum()) / den if den > 0 else float("nan")


def _ranks(x: Tensor) -> Tensor:
    order = torch.argsort(x, stable=True)
    r = torch.empty_like(x)
    r[order] = torch.arange(x.numel(), dtype=x.dtype, device=x.device)
    # average ranks over ties
    vals, inv = torch.unique(x, return_inverse=True)
    if vals.numel() < x.numel():
        sums = torch.zeros(vals.numel(), dtype=x.dtype, device=x.device).index_add_(0, inv, r)
        cnt = torch.zeros(vals.numel(), dtype=x.dtype, device=x.device).index_add_(0, inv, torch.ones_like(r))
        r = (sums / cnt)[inv]
    return r


def spearman(x: Tensor, y: Tensor) -> float:
    """Spearman rank correlation (average ranks for ties; NaN entries dropped)."""
    x, y = x.reshape(-1).to(torch.float64), y.reshape(-1).to(torch.float64)
    ok = torch.isfinite(x) & torch.isfinite(y)
    return pearson(_ranks(x[ok]), _ranks(y[ok])) if int(ok.sum()) >= 2 else float("nan")


@dataclass(frozen=True)
class AttributionComparison:
    """Attribution patching against activation patching on the same sites."""

    kind: str
    hook: str
    n_sites: int
    pearson: float
    spearman: float
    max_abs_error: float
    activation_seconds: float
    attribution_seconds: float
    speedup: float
    activation: PatchSweep
    attribution: PatchSweep

    def to_dict(self) -> dict[str, Any]:
        num = finite_or_none
        return {
            "kind": self.kind, "hook": self.hook, "n_sites": self.n_sites, "pearson": num(self.pearson),
            "spearman": num(self.spearman), "max_abs_error": num(self.max_abs_error),
            "activation_seconds": self.activation_seconds, "attribution_seconds": self.attribution_seconds,
            "speedup": num(self.speedup), "activation": self.activation.to_dict(),
            "attribution": self.attribution.to_dict(),
        }

    def summary(self) -> str:
        return (f"{self.kind:<12} {self.hook:<28} sites {self.n_sites:>4}  r {self.pearson:6.3f}  "
                f"rho {self.spearman:6.3f}  max|err| {self.max_abs_error:.3g}  "
                f"activation {self.activation_seconds:.3f} s  attribution {self.attribution_seconds:.3f} s  "
                f"speed-up {self.speedup:.0f}x")


def compare_with_activation_patching(
    model: Model,
    setup: PatchSetup,
    kinds: Sequence[str] = ("neurons",),
    *,
    layer: int = 0,
    position: int = -1,
    direction: str = "denoise",
    attr: Attribution | None = None,
) -> list[AttributionComparison]:
    """For each named sweep: activation patching of every site vs the attribution estimate, their Pearson and
    Spearman correlation, and the wall-time ratio (activation patching time / attribution time; the attribution
    passes serve every sweep, so each comparison is charged their full time)."""
    if attr is None:
        attr = attribution_patching(model, setup, direction=direction)
    out = []
    n_ctx = setup.clean_tokens.shape[1]
    for kind in kinds:
        act = sweep(model, setup, kind, layer=layer, position=position, direction=direction)
        est = attribution_sweep(model, attr, kind, layer=layer, position=position, n_ctx=n_ctx)
        a, e = act.values.reshape(-1), est.values.reshape(-1)
        ok = torch.isfinite(a) & torch.isfinite(e)
        err = float((a[ok] - e[ok]).abs().max()) if bool(ok.any()) else float("nan")
        out.append(AttributionComparison(
            kind, act.hook, int(a.numel()), pearson(a, e), spearman(a, e), err, act.seconds, attr.seconds,
            act.seconds / attr.seconds if attr.seconds > 0 else float("inf"), act, est,
        ))
    return out
