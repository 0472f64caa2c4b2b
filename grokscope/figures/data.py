"""Read-only access to what the figures need from a run: metrics, phases, key frequencies, weights and
activations over the full (a, b) grid. No plotting here, and nothing is ever written to the run.

Anything a run may lack (a metric column, ``analysis.json``, checkpoints) is reported by raising
:class:`FigureUnavailable` with a one-line reason, which the report turns into a note.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grokscope import measures
from grokscope.models import Model, has_blocks, is_own_model
from grokscope.models.forward import choose_forward
from grokscope.store.run import Run, RunError, checkpoint_path
from grokscope.training.user_model import class_name, user_forward


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


def grok_epoch(run: Run, m=None) -> int | None:
    """The first logged epoch with test accuracy >= ``measures.GROK_ACC`` (from the run's meta when recorded there)."""
    value = safe_meta(run).get("grok_epoch")
    if value not in (None, "", "None"):
        try:
            return int(value)
        except ValueError:
            pass
    return measures.grok_epoch(metrics_or_empty(run) if m is None else m)


def safe_meta(run: Run) -> dict[str, str]:
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
    """(phases, rule) from ``grokscope.measures.detect_phases`` over the run's metrics."""
    m = metrics_or_empty(run) if m is None else m
    if not len(m):
        return [], "no metrics"
    return phases_from_boundaries(measures.detect_phases(m), float(m.index[0]), float(m.index[-1]))


def phases_from_boundaries(ph: Any, first: float, last: float) -> tuple[list[Phase], str]:
    """Phases from a ``measures.phases.Phases`` (memorisation_end, circuit_formation_end, cleanup_end)."""
    get = (lambda k: ph.get(k)) if isinstance(ph, dict) else (lambda k: getattr(ph, k, None))
    bounds = [("memorisation", get("memorisation_end")), ("circuit formation", get("circuit_formation_end")),
              ("cleanup", get("cleanup_end"))]
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
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                for v in value):
        return sorted({int(v) for v in value})
    return None


def key_frequencies(run: Run, step: int | None = None) -> tuple[list[int], str]:
    """(key frequencies, how they were chosen): from ``analysis.json`` when present, else the measures' W_L_dft
    rule (:func:`grokscope.measures.key_frequencies_from_norms`) at the last checkpoint (a module without
    TransformerLens names: the ``logits_dft`` rule on its logits)."""
    data = analysis(run)
    if data is not None:
        ks = _int_list(find_key(data, "key_frequencies", "key_freqs"))
        if ks:
            rule = find_key(data, "key_freq_rule", "key_frequency_rule")
            return ks, f"analysis.json ({rule})" if isinstance(rule, str) else "analysis.json"
    if not run.checkpoints:
        return [], "no checkpoints"
    step = run.checkpoints[-1] if step is None else step
    try:
        w = weights(run, step)
    except FigureNotApplicable:  # a module without TransformerLens names: the spectrum of its logits
        if run.config.task.kind != "modular" or run.user_module is not None:
            raise
        table = torch.from_numpy(logits_grid(run, step)).reshape(-1, run.config.task.p)  # [p*p, p]
        return measures.key_frequencies_from_logits(table), "logits_dft at the last checkpoint (grokscope.measures)"
    norms = measures.frequency_norms(torch.from_numpy(w.W_L), dim=1)
    return measures.key_frequencies_from_norms(norms), "W_L_dft at the last checkpoint (grokscope.measures)"


# --------------------------------------------------------------------------- weights and activations


@dataclass(frozen=True)
class Weights:
    """Weight views of one checkpoint (numpy float64): W_E over the p number tokens, the neuron-logit map
    W_L = W_out @ W_U [d_mlp, p], and for the star plots H = W_E[:p] @ W_in [p, d_mlp]."""

    step: int
    W_E: np.ndarray
    W_L: np.ndarray
    H: np.ndarray


def weights(run: Run, step: int) -> Weights:
    return _weights_cached(str(run.dir.resolve()), step, _ckpt_mtime(run, step))


def _ckpt_mtime(run: Run, step: int) -> float:
    try:
        return checkpoint_path(run.dir, step).stat().st_mtime
    except OSError:
        return 0.0


@lru_cache(maxsize=256)
def _weights_cached(run_dir: str, step: int, _mtime: float) -> Weights:
    run = Run(run_dir)
    p = run.config.task.p
    model = _named_model(run, step)
    W_E = measures.number_embedding(model, p)
    W_in = (model.blocks[-1].mlp if has_blocks(model) else model.mlp).W_in.detach().double()
    return Weights(step=step, W_E=W_E.numpy(), W_L=measures.neuron_logit_map(model, p).numpy(), H=(W_E @ W_in).numpy())


@dataclass(frozen=True)
class Grid:
    """The model on every (a, b) pair: logits [p, p, p] (a, b, c), MLP activations at the last position
    [p, p, d_mlp], and attention from the last position [p, p, n_heads, n_ctx] (None for MLP models)."""

    step: int
    logits: np.ndarray
    post: np.ndarray
    attn: np.ndarray | None


def _single_operation(run: Run) -> None:
    if run.config.task.kind == "multi":
        raise FigureUnavailable("a mixture of operations: the (a, b) grid figures read one formula's inputs [a, b, =]; "
                                "the Fourier norms, logit fit and per-operation sections show each operation in "
                                "its own basis")


def grid(run: Run, step: int) -> Grid:
    _single_operation(run)
    return _grid_cached(str(run.dir.resolve()), step, _ckpt_mtime(run, step))


def operation_grid(run: Run, step: int, op: int) -> Grid:
    """:func:`grid` of one operation of a mixture (kind "multi"): the inputs [a, op_i, b, =] with op_i = p + 1 + op."""
    if run.config.task.kind != "multi":
        raise FigureUnavailable("operation grids exist for mixtures (task.kind='multi')")
    return _grid_cached(str(run.dir.resolve()), step, _ckpt_mtime(run, step), op)


@lru_cache(maxsize=8)
def _grid_cached(run_dir: str, step: int, _mtime: float, op: int | None = None) -> Grid:
    run = Run(run_dir)
    p = run.config.task.p
    model = _named_model(run, step)
    posts, attns, logits = [], [], []
    with torch.no_grad():
        for chunk in _grid_tokens(p, op).split(4096):
            out, cache = model.run_with_cache(chunk)
            logits.append(out[:, :p].float())
            hooked = cache[measures.post_hook_name(model)]
            posts.append((hooked[:, -1] if hooked.dim() == 3 else hooked).float())
            if has_blocks(model):
                attns.append(cache["blocks.0.attn.hook_pattern"][:, :, -1, :].float())  # [batch, head, k]
    post = torch.cat(posts).reshape(p, p, -1).numpy()
    attn = torch.cat(attns).reshape(p, p, *attns[0].shape[1:]).numpy() if attns else None
    return Grid(step=step, logits=torch.cat(logits).reshape(p, p, p).numpy(), post=post, attn=attn)


def logits_grid(run: Run, step: int) -> np.ndarray:
    """Only the logits [p, p, p] (a, b, c) of checkpoint ``step``: a plain forward pass, no activation cache."""
    _single_operation(run)
    p = run.config.task.p
    model = _model(run, step)
    forward = choose_forward(model, run.task()).fn if is_own_model(model) else user_forward(model, run.task()).fn
    with torch.no_grad():
        out = torch.cat([forward(chunk)[:, :p].float() for chunk in _grid_tokens(p).split(8192)])
    return out.reshape(p, p, p).numpy()


def _model(run: Run, step: int) -> torch.nn.Module:
    """The model of checkpoint ``step``; FigureNotApplicable (one line) for a run of your own module passed as
    ``model=``, which the report cannot build."""
    if run.user_module is not None:
        raise FigureNotApplicable(f"the run trained your module {run.user_module}, which the report cannot build "
                                  "(register it with grokscope.models.register_model to train it by name)")
    return run.load_model(step)


def _named_model(run: Run, step: int) -> Model:
    """:func:`_model` for a figure that reads weights or activations by TransformerLens names: FigureNotApplicable
    when the model is not one of grokscope's."""
    model = _model(run, step)
    if not is_own_model(model):
        raise FigureNotApplicable(f"reads weights and activations by TransformerLens names; the run trained "
                                  f"{class_name(model)} (its logit figures are drawn)")
    return model


def grid_logits(run: Run, step: int) -> np.ndarray:
    """The logits [p, p, p] (a, b, c) of checkpoint ``step``: the cached :func:`grid`'s (shared with the activation
    figures), or for a module without TransformerLens hooks its own forward's (:func:`logits_grid`)."""
    try:
        return grid(run, step).logits
    except FigureNotApplicable:
        return logits_grid(run, step)


def _grid_tokens(p: int, op: int | None = None) -> torch.Tensor:
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    if op is not None:  # a mixture's inputs [a, op, b, =]
        return torch.stack([a, torch.full_like(a, p + 1 + op), b, torch.full_like(a, p)], dim=1)
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
    """Per neuron of ``post`` [p, p, d_mlp]: (best frequency k in 1..(p-1)/2, its share of the neuron's centred
    variance: :func:`grokscope.measures.neuron_frequency_fractions`)."""
    fr = measures.neuron_frequency_fractions(torch.from_numpy(post).double(), p).numpy()  # [K, n]
    best = fr.argmax(axis=0)
    return best + 1, fr[best, np.arange(fr.shape[1])]
