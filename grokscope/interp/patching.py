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
:func:`patch_sites` patches many sites, one at a time, in batched forward passes; :mod:`.patch_sweeps` lays out
the named sweeps and the frequency clusters on it.

Everything is a pure function of a model and tensors; no files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from grokscope.models import Model

__all__ = ["PatchResult", "PatchSetup", "Site", "activation_layout", "finite_or_none", "logit_diff", "make_corruption",
           "patch_activation", "patch_sites", "recovered_fraction", "run_caches", "site_mask"]


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
    dev = task.tokens.device
    rows = {"all": torch.arange(task.tokens.shape[0], device=dev), "train": task.train_idx,
            "test": task.test_idx}.get(split)
    if rows is None:
        raise ValueError(f"split must be 'all', 'train' or 'test', got {split!r}")
    p = task.p
    # the seeded draws are made on the CPU (the same inputs on every device); the row-by-row search reads CPU copies
    gen = torch.Generator().manual_seed(seed)
    rows = rows.cpu()[torch.randperm(rows.numel(), generator=gen, device="cpu")]
    tokens, labels = task.tokens.cpu(), task.labels.cpu()
    # lookup table: grid index a*p + b -> task row (or -1 where the formula is undefined)
    lookup = torch.full((p * p,), -1, dtype=torch.long, device="cpu")
    lookup[task.pair_index.cpu()] = torch.arange(tokens.shape[0], device="cpu")
    pos = 0 if operand == "a" else 1
    clean_rows: list[int] = []
    corrupt_rows: list[int] = []
    want = rows.numel() if n is None else min(int(n), rows.numel())
    for r in rows.tolist():
        if len(clean_rows) >= want:
            break
        a, b = int(tokens[r, 0]), int(tokens[r, 1])
        cand = torch.randperm(p, generator=gen, device="cpu")
        for x in cand.tolist():
            if x == (a if pos == 0 else b):
                continue
            idx = x * p + b if pos == 0 else a * p + x
            j = int(lookup[idx])
            if j >= 0 and int(labels[j]) != int(labels[r]):
                clean_rows.append(r)
                corrupt_rows.append(j)
                break
    if not clean_rows:
        raise ValueError("no input has a corruption with a different answer")
    c, k = torch.tensor(clean_rows, device=dev), torch.tensor(corrupt_rows, device=dev)
    how = (f"operand {operand} replaced by a random residue with a different answer; {len(c)} {split} inputs, "
           f"seed {seed}")
    return PatchSetup(task.tokens[c], task.tokens[k], task.labels[c], task.labels[k], description=how)


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


def site_mask(site: Site, shape: Sequence[int], device: torch.device | str = "cpu") -> Tensor:
    """Boolean mask over an activation's non-batch axes (``shape`` includes the batch axis) selecting ``site``,
    on ``device`` (that of the activation it selects from)."""
    layout = activation_layout(site.hook, len(shape))
    mask = torch.ones(tuple(shape[1:]), dtype=torch.bool, device=device)
    for axis, name in enumerate(layout[1:]):
        size = shape[axis + 1]
        if name == "pos" and site.position is not None:
            keep = torch.zeros(size, dtype=torch.bool, device=device)
            keep[site.position] = True
        elif name == "head" and site.head is not None:
            keep = torch.zeros(size, dtype=torch.bool, device=device)
            keep[site.head] = True
        elif name == "unit" and site.units is not None:
            keep = torch.zeros(size, dtype=torch.bool, device=device)
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
        return {k: finite_or_none(v) for k, v in self.__dict__.items()}


def finite_or_none(v: Any) -> Any:
    """A float as itself when finite, else None (JSON has no NaN); anything else unchanged."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    return v


def recovered_fraction(patched: Tensor, clean: float, corrupt: float) -> Tensor:
    """(patched - corrupt) / (clean - corrupt), elementwise; NaN where clean and corrupt (nearly) agree."""
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
    out = torch.empty(len(sites), dtype=torch.float64, device=lc.device)
    by_hook: dict[str, list[int]] = {}
    for i, s in enumerate(sites):
        if s.hook not in source:
            known = ", ".join(sorted(source))
            raise ValueError(f"no activation named {s.hook!r}; known: {known}")
        by_hook.setdefault(s.hook, []).append(i)
    for hook, idx in by_hook.items():
        src = source[hook]
        masks = torch.stack([site_mask(sites[i], src.shape, src.device) for i in idx])  # [m, *shape[1:]]
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
    rec = float(recovered_fraction(ld, clean, corrupt)[0])
    return PatchResult(site.name(), direction, clean, corrupt, float(ld[0]), rec)
