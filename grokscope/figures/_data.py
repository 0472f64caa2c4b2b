"""Read-only access to what the figures need from a run: metrics, phases, key frequencies, weights and
activations over the full (a, b) grid. No plotting here, and nothing is ever written to the run.

Anything a run may lack (a metric column, ``analysis.json``, checkpoints, the measures package) is reported
by raising :class:`FigureUnavailable` with a one-line reason, which the report turns into a note.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grokscope.measures.phases import GROK_ACC
from grokscope.models.fast import fast_forward
from grokscope.store.run import Run, RunError

GROK_THRESHOLD = GROK_ACC


class FigureUnavailable(Exception):
    """This figure cannot be drawn for this run; the message says why (one line)."""


class FigureNotApplicable(FigureUnavailable):
    """This kind of figure does not exist for this kind of model (e.g. star plots of a transformer)."""


def as_run(run: Run | str | Path) -> Run:
    return run if isinstance(run, Run) else Run(run)


# --------------------------------------------------------------------------- metrics and landmarks


def metrics(run: Run):
    """The run's metrics DataFrame (index ``step``); raises FigureUnavailable when there are none."""
    try:
        m = run.metrics
    except RunError as e:
        raise FigureUnavailable(str(e)) from None
    if not len(m):
        raise FigureUnavailable("the run has no metrics yet")
    return m


def metrics_or_empty(run: Run):
    import pandas as pd

    try:
        return run.metrics
    except RunError:
        return pd.DataFrame(index=pd.Index([], name="step", dtype="int64"))


def first_at_least(m, column: str, threshold: float = GROK_THRESHOLD) -> int | None:
    if column not in m:
        return None
    hit = m.index[m[column] >= threshold]
    return int(hit[0]) if len(hit) else None


def grok_epoch(run: Run, m=None) -> int | None:
    """The first logged epoch with test accuracy >= 99% (from the run's meta when recorded there)."""
    meta = _safe_meta(run)
    value = meta.get("grok_epoch")
    if value not in (None, "", "None"):
        try:
            return int(value)
        except ValueError:
            pass
    m = metrics_or_empty(run) if m is None else m
    return first_at_least(m, "test_acc")


def _safe_meta(run: Run) -> dict[str, str]:
    try:
        return run.meta
    except RunError:
        return {}


@dataclass(frozen=True)
class Phase:
    name: str
    start: float
    end: float


def phases(run: Run, m=None) -> tuple[list[Phase], str]:
    """(phases, rule). Uses ``grokscope.measures.phases.detect_phases`` when present; otherwise a documented
    fallback: memorisation = [0, first epoch with train accuracy >= 99%], generalisation = [that, grok epoch]."""
    m = metrics_or_empty(run) if m is None else m
    if not len(m):
        return [], "no metrics"
    note = ""
    detect_phases: Callable[[Any], Any] | None
    try:
        from grokscope.measures.phases import detect_phases
    except ImportError:
        detect_phases = None
    if detect_phases is not None:
        try:
            return phases_from_boundaries(detect_phases(m), float(m.index[0]), float(m.index[-1]))
        except Exception as e:  # noqa: BLE001 - a bug elsewhere must not break a report
            note = f"measures.phases failed ({type(e).__name__}: {e}); "
    out = []
    t_mem = first_at_least(m, "train_acc")
    t_grok = grok_epoch(run, m)
    if t_mem is not None:
        out.append(Phase("memorisation", float(m.index[0]), float(t_mem)))
        if t_grok is not None and t_grok > t_mem:
            out.append(Phase("generalisation", float(t_mem), float(t_grok)))
    return out, note + "fallback rule: train acc >= 99% ends memorisation; test acc >= 99% ends generalisation"


def phases_from_boundaries(ph: Any, first: float, last: float) -> tuple[list[Phase], str]:
    """Phases from a ``measures.phases.Phases`` (memorisation_end, circuit_formation_end, cleanup_end)."""
    get = (lambda k: ph.get(k)) if isinstance(ph, dict) else (lambda k: getattr(ph, k, None))
    bounds = [("memorisation", get("memorisation_end")), ("circuit formation", get("circuit_formation_end")), ("cleanup", get("cleanup_end"))]
    out: list[Phase] = []
    prev = first
    for name, end in bounds:
        if end is None:
            # the phase has begun but not ended: shade it to the last logged step
            if prev is not None and prev < last and out:
                out.append(Phase(name, float(prev), float(last)))
            break
        out.append(Phase(name, float(prev), float(end)))
        prev = float(end)
    rule = get("rule")
    return out, rule if isinstance(rule, str) else "grokscope.measures.phases"


# --------------------------------------------------------------------------- analysis.json


def analysis(run: Run) -> dict | None:
    """The run's ``analysis.json`` (written by ``grokscope analyze``), or None."""
    path = run.dir / "analysis.json"
    if not path.is_file():
        return None
    try:
        data = run.read_json("analysis.json")
    except RunError:
        return None
    return data if isinstance(data, dict) else None


def find_key(obj: Any, *names: str) -> Any:
    """The first value stored under one of ``names`` anywhere in a nested dict (breadth first)."""
    queue = [obj]
    while queue:
        cur = queue.pop(0)
        if isinstance(cur, dict):
            for n in names:
                if n in cur:
                    return cur[n]
            queue.extend(v for v in cur.values() if isinstance(v, (dict, list)))
        elif isinstance(cur, list):
            queue.extend(v for v in cur if isinstance(v, dict))
    return None


def _int_list(value: Any) -> list[int] | None:
    if isinstance(value, dict):
        for k in ("frequencies", "ks", "keys", "key_frequencies", "values"):
            if k in value:
                return _int_list(value[k])
        return None
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return sorted({int(v) for v in value})
    return None


def key_frequencies(run: Run, step: int | None = None) -> tuple[list[int], str]:
    """(key frequencies, how they were chosen): from ``analysis.json`` when present, else from the Fourier norms
    of W_L at the last checkpoint with the rule "largest jump among the 10 largest per-frequency norms"."""
    data = analysis(run)
    if data is not None:
        ks = _int_list(find_key(data, "key_frequencies", "key_freqs"))
        if ks:
            rule = find_key(data, "key_freq_rule", "key_frequency_rule")
            return ks, f"analysis.json ({rule})" if isinstance(rule, str) else "analysis.json"
    if not run.checkpoints:
        return [], "no checkpoints"
    w = weights(run, run.checkpoints[-1] if step is None else step)
    norms = fourier().frequency_norms(torch.from_numpy(w.W_L), dim=1)
    try:
        from grokscope.measures.progress import key_frequencies_from_norms
    except ImportError:
        return largest_jump(norms.numpy()), "largest jump among the 10 largest W_L frequency norms (figures fallback)"
    return key_frequencies_from_norms(norms), "W_L_dft at the last checkpoint (grokscope.measures)"


def largest_jump(norms: np.ndarray, top: int = 10) -> list[int]:
    """Frequencies (1-based) above the largest drop between consecutive sorted norms, within the ``top`` largest."""
    order = np.argsort(-norms)
    vals = norms[order][: min(top, len(norms)) + 1]
    if len(vals) < 2:
        return [int(order[0]) + 1] if len(order) else []
    ratios = vals[:-1] / np.maximum(vals[1:], 1e-30)
    cut = int(np.argmax(ratios)) + 1
    return sorted(int(i) + 1 for i in order[:cut])


# --------------------------------------------------------------------------- Fourier


def fourier():
    """The Fourier module: ``grokscope.measures.fourier`` when present, else a private minimal stand-in."""
    try:
        from grokscope.measures import fourier as fm

        return fm
    except ImportError:
        return _MiniFourier


class _MiniFourier:
    """Private fallback (fold into measures.fourier): orthonormal basis over Z_p, rows const, cos k, sin k."""

    @staticmethod
    def fourier_basis(p: int, dtype=torch.float64):
        x = torch.arange(p, dtype=torch.float64)
        rows = [torch.full((p,), 1 / math.sqrt(p), dtype=torch.float64)]
        for k in range(1, (p + 1) // 2):
            rows += [torch.cos(2 * math.pi * k * x / p) * math.sqrt(2 / p), torch.sin(2 * math.pi * k * x / p) * math.sqrt(2 / p)]
        return torch.stack(rows).to(dtype)

    @staticmethod
    def fourier_basis_names(p: int) -> list[str]:
        return ["const"] + [f"{t} {k}" for k in range(1, (p - 1) // 2 + 1) for t in ("cos", "sin")]

    @classmethod
    def fourier_transform(cls, x, dim=0, basis=None):
        basis = cls.fourier_basis(x.shape[dim]) if basis is None else basis
        return torch.tensordot(basis, x.to(torch.float64).movedim(dim, 0), dims=([1], [0])).movedim(0, dim)

    @classmethod
    def component_norms(cls, x, dim=0):
        c = cls.fourier_transform(x, dim).movedim(dim, 0)
        return c.reshape(c.shape[0], -1).norm(dim=1)

    @classmethod
    def frequency_norms(cls, x, dim=0):
        c = cls.component_norms(x, dim)
        return torch.sqrt(c[1::2] ** 2 + c[2::2] ** 2)


def basis_names(p: int) -> list[str]:
    return list(fourier().fourier_basis_names(p))


# --------------------------------------------------------------------------- weights and activations


@dataclass(frozen=True)
class Weights:
    """Weight views of one checkpoint (numpy float64): W_E over the p number tokens, the neuron-logit map
    W_L = W_out @ W_U [d_mlp, p], and for the star plots H = W_E[:p] @ W_in [p, d_mlp]."""

    step: int
    W_E: np.ndarray
    W_L: np.ndarray
    H: np.ndarray


def _p(run: Run) -> int:
    return run.config.task.p


def weights(run: Run, step: int) -> Weights:
    return _weights_cached(str(run.dir.resolve()), step, _ckpt_mtime(run, step))


def _ckpt_mtime(run: Run, step: int) -> float:
    from grokscope.store.run import checkpoint_path

    try:
        return checkpoint_path(run.dir, step).stat().st_mtime
    except OSError:
        return 0.0


@lru_cache(maxsize=256)
def _weights_cached(run_dir: str, step: int, _mtime: float) -> Weights:
    run = Run(run_dir)
    p = _p(run)
    sd = run.load_state_dict(step)
    W_E = sd["embed.W_E"][:p].double()
    if run.config.model.arch == "mlp":
        W_in, W_out = sd["mlp.W_in"].double(), sd["mlp.W_out"].double()
        W_U = sd["unembed.W_U"].double() if "unembed.W_U" in sd else sd["embed.W_E"][:p].double().T
    else:
        last = run.config.model.n_layers - 1
        W_in, W_out = sd[f"blocks.{last}.mlp.W_in"].double(), sd[f"blocks.{last}.mlp.W_out"].double()
        W_U = sd["unembed.W_U"].double()
    W_L = W_out @ W_U[:, :p]  # [d_mlp, p]
    H = W_E @ W_in  # [p, d_mlp]
    return Weights(step=step, W_E=W_E.numpy(), W_L=W_L.numpy(), H=H.numpy())


@dataclass(frozen=True)
class Grid:
    """The model on every (a, b) pair: logits [p, p, p] (a, b, c), MLP activations at the last position
    [p, p, d_mlp], and attention from the last position [p, p, n_heads, n_ctx] (None for MLP models)."""

    step: int
    logits: np.ndarray
    post: np.ndarray
    attn: np.ndarray | None


def grid(run: Run, step: int) -> Grid:
    return _grid_cached(str(run.dir.resolve()), step, _ckpt_mtime(run, step))


@lru_cache(maxsize=8)
def _grid_cached(run_dir: str, step: int, _mtime: float) -> Grid:
    run = Run(run_dir)
    p = _p(run)
    model = run.load_model(step)
    tokens = _grid_tokens(p)
    posts, attns, logits = [], [], []
    last = run.config.model.n_layers - 1
    with torch.no_grad():
        for chunk in tokens.split(4096):
            out, cache = model.run_with_cache(chunk)
            logits.append(out[:, :p].float())
            if run.config.model.arch == "mlp":
                posts.append(cache["mlp.hook_post"].float())
            else:
                posts.append(cache[f"blocks.{last}.mlp.hook_post"][:, -1].float())
                attns.append(cache["blocks.0.attn.hook_pattern"][:, :, -1, :].float())  # [batch, head, k]
    post = torch.cat(posts).reshape(p, p, -1).numpy()
    attn = torch.cat(attns).reshape(p, p, *attns[0].shape[1:]).numpy() if attns else None
    return Grid(step=step, logits=torch.cat(logits).reshape(p, p, p).numpy(), post=post, attn=attn)


def logits_grid(run: Run, step: int) -> np.ndarray:
    """Only the logits [p, p, p] (a, b, c) of checkpoint ``step``: a plain forward pass, no activation cache."""
    p = _p(run)
    model = run.load_model(step)
    forward = fast_forward(model, run.task()) or model  # the same function, a third of the work when eligible
    with torch.no_grad():
        out = torch.cat([forward(chunk)[:, :p].float() for chunk in _grid_tokens(p).split(8192)])
    return out.reshape(p, p, p).numpy()


def _grid_tokens(p: int) -> torch.Tensor:
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    return torch.stack([a, b, torch.full_like(a, p)], dim=1)


def pick_checkpoints(run: Run, max_frames: int = 40) -> list[int]:
    """Up to ``max_frames`` checkpoints spread evenly over training (always the first and the last)."""
    steps = run.checkpoints
    if len(steps) <= max_frames:
        return steps
    idx = np.unique(np.round(np.linspace(0, len(steps) - 1, max_frames)).astype(int))
    return [steps[i] for i in idx]


def last_step(run: Run, step: int | None) -> int:
    steps = run.checkpoints
    if not steps:
        raise FigureUnavailable("the run has no checkpoints")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise FigureUnavailable(f"no checkpoint at step {step}")
    return step


def neuron_frequency_fve(post: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron: (best frequency k in 1..(p-1)/2, fraction of its centred variance in the 3x3 Fourier block
    {0, 2k-1, 2k}^2 over (a, b)) (the paper code's clustering rule; private until analysis offers it)."""
    try:
        from grokscope.measures.progress import neuron_frequency_fractions
    except ImportError:
        pass
    else:
        fr = neuron_frequency_fractions(torch.from_numpy(post).double(), p).numpy()  # [K, n]
        best = fr.argmax(axis=0)
        return best + 1, fr[best, np.arange(fr.shape[1])]
    fm = fourier()
    F = fm.fourier_basis(p).numpy()
    x = post.astype(np.float64) - post.mean(axis=(0, 1), keepdims=True)  # [p, p, n]
    c = np.einsum("ia,abn,jb->ijn", F, x, F, optimize=True)  # 2D Fourier coefficients
    energy = c**2
    total = energy.sum(axis=(0, 1)) + 1e-30
    n_freq = (p - 1) // 2
    fracs = np.empty((n_freq, x.shape[2]))
    for k in range(1, n_freq + 1):
        idx = [0, 2 * k - 1, 2 * k]
        fracs[k - 1] = energy[np.ix_(idx, idx)].sum(axis=(0, 1)) / total
    best = fracs.argmax(axis=0)
    return best + 1, fracs[best, np.arange(x.shape[2])]
