"""Linear probes: closed-form ridge regression from an activation to Fourier features of the inputs.

For a modular task the targets are, per frequency k (w_k = 2 pi k / p), the pairs

    a:   cos/sin(w_k a)      b:   cos/sin(w_k b)      a+b: cos/sin(w_k (a+b))      c: cos/sin(w_k c)

(c the correct answer; for the task a+b, "a+b" and "c" coincide and only "a+b" is reported) and the answer
itself (one-hot over the p classes; reported as held-out R^2 and argmax accuracy). A probe is fitted on a random
half of the p*p inputs (``fit_fraction``, ``seed``; independent of the task's train/test split, which the model
saw) and scored on the rest: R^2 = 1 - SSE / SST summed over the probe's outputs (the cos and sin pair for a
frequency), with SST around the fitting rows' mean. The ridge penalty is lambda = alpha * trace(X^T X) / d,
alpha chosen from ``ALPHAS`` on a validation fifth of the fitting rows (then refitted on all of them).

Features are the activation at one position, flattened (any hook; default: the last MLP's ``hook_post`` at
the last position), centred with the fitting rows' mean (the intercept).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from grokscope.interp.patching import activation_layout, finite_or_none
from grokscope.models import Model, has_blocks

__all__ = [
    "ALPHAS",
    "ProbeFit",
    "ProbeReport",
    "ProbeSeries",
    "RidgeSolver",
    "activations_at",
    "fit_ridge",
    "fourier_targets",
    "probe_checkpoints",
    "probe_model",
    "r2_score",
]

#: Candidate relative ridge penalties (lambda = alpha * mean eigenvalue of X^T X).
ALPHAS = (1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


# ----------------------------------------------------------------------------- ridge regression


def r2_score(y: Tensor, pred: Tensor, mean: Tensor | None = None) -> float:
    """1 - SSE / SST over all outputs of y [n, t] (SST around ``mean``, default y's own mean); NaN if SST = 0."""
    y, pred = y.to(torch.float64), pred.to(torch.float64)
    if y.dim() == 1:
        y, pred = y[:, None], pred[:, None]
    mu = y.mean(dim=0) if mean is None else mean.to(torch.float64).reshape(1, -1)
    sst = float(((y - mu) ** 2).sum())
    if sst <= 0:
        return float("nan")
    return 1.0 - float(((y - pred) ** 2).sum()) / sst


@dataclass(frozen=True)
class ProbeFit:
    """A fitted ridge probe: pred = (x - x_mean) @ W + y_mean."""

    W: Tensor  # [d, t]
    x_mean: Tensor  # [d]
    y_mean: Tensor  # [t]
    alpha: float

    def predict(self, x: Tensor) -> Tensor:
        return (x.to(torch.float64) - self.x_mean) @ self.W + self.y_mean


def _solve(evals: Tensor, evecs: Tensor, xty: Tensor, lam: float) -> Tensor:
    return evecs @ ((evecs.T @ xty) / (evals + lam)[:, None])


class _Decomp:
    """Centred X^T X of some rows, eigendecomposed once (shared by every target and every alpha)."""

    def __init__(self, x: Tensor):
        self.x_mean = x.mean(dim=0)
        self.xc = x - self.x_mean
        evals, self.evecs = torch.linalg.eigh(self.xc.T @ self.xc)
        self.evals = evals.clamp_min(0)
        self.scale = float(self.evals.mean()) or 1.0

    def solve(self, y: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
        y_mean = y.mean(dim=0)
        return _solve(self.evals, self.evecs, self.xc.T @ (y - y_mean), alpha * self.scale), y_mean


class RidgeSolver:
    """Ridge probes from one feature matrix x [n, d] to many targets (float64, with an intercept).

    The relative penalty alpha (lambda = alpha * mean eigenvalue of the centred X^T X) is chosen per target from
    ``alphas`` by R^2 on a random ``val_fraction`` of the rows, then the probe is refitted on every row.
    """

    def __init__(self, x: Tensor, *, alphas: Sequence[float] = ALPHAS, val_fraction: float = 0.2, seed: int = 0):
        self.x = x.to(torch.float64)
        n = self.x.shape[0]
        if n < 2:
            raise ValueError(f"need at least 2 rows to fit a probe, got {n}")
        self.alphas = tuple(alphas)
        self.full = _Decomp(self.x)
        n_val = max(1, int(round(n * val_fraction)))
        self.split = None
        if n - n_val >= 2 and len(self.alphas) > 1:
            gen = torch.Generator().manual_seed(seed)  # drawn on the CPU: the same split on every device
            perm = torch.randperm(n, generator=gen, device="cpu").to(self.x.device)
            self.val, self.tr = perm[:n_val], perm[n_val:]
            self.split = _Decomp(self.x[self.tr])

    def fit(self, y: Tensor, alpha: float | None = None) -> ProbeFit:
        y = y.to(torch.float64)
        if y.dim() == 1:
            y = y[:, None]
        if y.shape[0] != self.x.shape[0]:
            raise ValueError(f"need matching rows in x and y, got {self.x.shape[0]} and {y.shape[0]}")
        if alpha is None:
            if self.split is None:
                alpha = self.alphas[len(self.alphas) // 2]
            else:
                best, alpha = -math.inf, self.alphas[0]
                xv = self.x[self.val] - self.split.x_mean
                for a in self.alphas:
                    w, ym = self.split.solve(y[self.tr], a)
                    score = r2_score(y[self.val], xv @ w + ym, mean=ym)
                    if score > best + 1e-12:
                        best, alpha = score, a
        w, ym = self.full.solve(y, alpha)
        return ProbeFit(w, self.full.x_mean, ym, float(alpha))


def fit_ridge(x: Tensor, y: Tensor, *, alpha: float | None = None, alphas: Sequence[float] = ALPHAS,
              val_fraction: float = 0.2, seed: int = 0) -> ProbeFit:
    """Closed-form ridge regression of y [n, t] on x [n, d] with an intercept (float64); see :class:`RidgeSolver`."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"need matching rows in x and y, got {x.shape[0]} and {y.shape[0]}")
    return RidgeSolver(x, alphas=alphas, val_fraction=val_fraction, seed=seed).fit(y, alpha)


# ----------------------------------------------------------------------------- targets and features


def fourier_targets(task: Any, freqs: Iterable[int],
                    kinds: Sequence[str] = ("a", "b", "a+b", "c")) -> dict[str, Tensor]:
    """Targets in ``task.tokens`` order: ``"{kind} k={k}"`` -> [N, 2] (cos, sin of w_k * kind)."""
    p = task.p
    a, b = task.tokens[:, 0].to(torch.float64), task.tokens[:, 1].to(torch.float64)
    values = {"a": a, "b": b, "a+b": (a + b) % p, "c": task.labels.to(torch.float64)}
    out = {}
    for kind in kinds:
        if kind not in values:
            raise ValueError(f"unknown probe target {kind!r}; known: a, b, a+b, c")
        for k in freqs:
            ang = 2 * math.pi * int(k) * values[kind] / p
            out[f"{kind} k={int(k)}"] = torch.stack([torch.cos(ang), torch.sin(ang)], dim=1)
    return out


def default_hook(model: Model) -> str:
    if has_blocks(model):
        return f"blocks.{len(model.blocks) - 1}.mlp.hook_post"
    return "mlp.hook_post"


def activations_at(model: Model, tokens: Tensor, hook: str | None = None, position: int | None = -1) -> Tensor:
    """Activation ``hook`` (default: the last MLP's post-activations) at ``position`` (None: every position,
    concatenated), flattened to [N, features] float64. Activations without a position axis are used whole."""

    hook = hook or default_hook(model)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    if hook not in cache:
        raise ValueError(f"no activation named {hook!r}; known: {', '.join(sorted(cache))}")
    x = cache[hook]
    layout = activation_layout(hook, x.dim())
    if "pos" in layout and position is not None:
        axis = layout.index("pos")
        x = x.select(axis, position)
    return x.reshape(x.shape[0], -1).to(torch.float64)


# ----------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class ProbeReport:
    """Held-out R^2 of every probe of one activation (one checkpoint)."""

    hook: str
    position: int | None
    step: int | None
    key_frequencies: list[int]
    r2: dict[str, float]  # "a+b k=14" -> R^2
    alpha: dict[str, float]
    answer_r2: float
    answer_acc: float
    n_fit: int
    n_eval: int

    def r2_of(self, kind: str, k: int) -> float:
        return self.r2.get(f"{kind} k={k}", float("nan"))

    def to_dict(self) -> dict[str, Any]:
        num = finite_or_none
        return {
            "hook": self.hook, "position": self.position, "step": self.step,
            "key_frequencies": list(self.key_frequencies),
            "r2": {k: num(v) for k, v in self.r2.items()},
            "alpha": dict(self.alpha),
            "answer_r2": num(self.answer_r2), "answer_acc": num(self.answer_acc),
            "n_fit": self.n_fit, "n_eval": self.n_eval,
        }

    def table(self) -> str:
        kinds = sorted({name.split(" k=")[0] for name in self.r2}, key=["a", "b", "a+b", "c"].index)
        freqs = sorted({int(name.split(" k=")[1]) for name in self.r2})
        head = f"{'k':>4}  " + "  ".join(f"{'R2 ' + kd:>9}" for kd in kinds)
        lines = [head, "-" * len(head)]
        for k in freqs:
            mark = "*" if k in self.key_frequencies else " "
            lines.append(f"{k:>3}{mark}  " + "  ".join(f"{self.r2_of(kd, k):>9.3f}" for kd in kinds))
        lines.append(f"answer (one-hot over p): R2 {self.answer_r2:.3f}, argmax accuracy {self.answer_acc:.3f}"
                     "   (* key frequency)")
        return "\n".join(lines)


def probe_model(
    model: Model,
    task: Any,
    key_freqs: Iterable[int],
    *,
    hook: str | None = None,
    position: int | None = -1,
    kinds: Sequence[str] | None = None,
    extra_freqs: Iterable[int] = (),
    fit_fraction: float = 0.5,
    seed: int = 0,
    alpha: float | None = None,
    step: int | None = None,
) -> ProbeReport:
    """Fit and score every probe (targets of :func:`fourier_targets` for ``key_freqs`` and ``extra_freqs``,
    and the one-hot answer) on activation ``hook`` at ``position`` over all inputs of ``task``."""
    key_freqs = sorted({int(k) for k in key_freqs})
    freqs = sorted(set(key_freqs) | {int(k) for k in extra_freqs})
    if kinds is None:
        same = bool(torch.equal((task.tokens[:, 0] + task.tokens[:, 1]) % task.p, task.labels))
        kinds = ("a", "b", "a+b") if same else ("a", "b", "a+b", "c")
    x = activations_at(model, task.tokens, hook, position)
    n = x.shape[0]
    gen = torch.Generator().manual_seed(seed)  # drawn on the CPU: the same split on every device
    perm = torch.randperm(n, generator=gen, device="cpu").to(x.device)
    n_fit = max(2, min(n - 1, int(round(n * fit_fraction))))
    fit, ev = perm[:n_fit], perm[n_fit:]
    r2, alphas = {}, {}
    solver = RidgeSolver(x[fit], seed=seed)
    for name, y in fourier_targets(task, freqs, kinds).items():
        probe = solver.fit(y[fit], alpha)
        r2[name] = r2_score(y[ev], probe.predict(x[ev]), mean=probe.y_mean)
        alphas[name] = probe.alpha
    onehot = torch.nn.functional.one_hot(task.labels, task.p).to(torch.float64)
    probe = solver.fit(onehot[fit], alpha)
    pred = probe.predict(x[ev])
    answer_r2 = r2_score(onehot[ev], pred, mean=probe.y_mean)
    answer_acc = float((pred.argmax(dim=1) == task.labels[ev]).to(torch.float64).mean())
    alphas["answer"] = probe.alpha
    return ProbeReport(hook or default_hook(model), position, step, key_freqs, r2, alphas, answer_r2, answer_acc,
                       int(fit.numel()), int(ev.numel()))


@dataclass(frozen=True)
class ProbeSeries:
    """Probe reports over checkpoints (a progress measure: when does each key frequency become linearly
    readable from the activation?)."""

    reports: list[ProbeReport] = field(default_factory=list)

    @property
    def steps(self) -> list[int | None]:
        return [r.step for r in self.reports]

    def column(self, kind: str, k: int) -> list[float]:
        return [r.r2_of(kind, k) for r in self.reports]

    def to_dict(self) -> dict[str, Any]:
        return {"reports": [r.to_dict() for r in self.reports]}

    def table(self, kind: str = "a+b") -> str:
        if not self.reports:
            return "(no checkpoints)"
        freqs = self.reports[0].key_frequencies
        head = f"{'step':>8}  " + "  ".join(f"{'k=' + str(k):>7}" for k in freqs) + f"  {'answer acc':>10}"
        lines = [f"held-out R2 of cos/sin(w_k ({kind})) probes", head, "-" * len(head)]
        for r in self.reports:
            r2s = "  ".join(f"{r.r2_of(kind, k):>7.3f}" for k in freqs)
            lines.append(f"{r.step if r.step is not None else '-':>8}  " + r2s + f"  {r.answer_acc:>10.3f}")
        return "\n".join(lines)


def probe_checkpoints(
    models: Iterable[tuple[int, Callable[[], Model]]], task: Any, key_freqs: Iterable[int], **kw: Any
) -> ProbeSeries:
    """:func:`probe_model` at every (step, load_model) pair with the key frequencies fixed."""
    key_freqs = list(key_freqs)
    return ProbeSeries([probe_model(load(), task, key_freqs, step=step, **kw) for step, load in models])
