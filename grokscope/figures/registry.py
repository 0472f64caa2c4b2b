"""The ordered list of a run's figures, and :func:`build_all`, which turns unavailable ones into notes."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from grokscope.figures import circuit, interp, operations, stars, training
from grokscope.figures.data import FigureNotApplicable, FigureUnavailable, as_run
from grokscope.figures.group import operation_bases
from grokscope.store.run import Run


@dataclass(frozen=True)
class FigureSpec:
    key: str
    title: str
    caption: str
    build: Callable[[Run], go.Figure]
    weights: bool = False  # a weight/checkpoint-based view (gets a checkpoint slider where offered)


@dataclass
class FigureResult:
    key: str
    title: str
    caption: str
    figure: go.Figure | None
    note: str = ""
    seconds: float = 0.0
    applicable: bool = True
    extra: dict = field(default_factory=dict)


FIGURES: list[FigureSpec] = [
    FigureSpec("curves", "Loss and accuracy", "Train and test cross-entropy (log scale) and accuracy per epoch. "
               "Shaded: the detected phases; dashed: the grok epoch (test accuracy first ≥ 99%).", training.curves),
    FigureSpec("operation_curves", "Loss and accuracy per operation", "A mixture of operations: each operation's "
               "train and test loss and accuracy, the legend naming its basis.", operations.operation_curves),
    FigureSpec("progress", "Progress measures", "Nanda et al. Figure 7 on one time axis: excluded loss (key "
               "frequencies removed, train rows), restricted loss (only key frequencies, all p² inputs), train/test "
               "loss, Gini of the Fourier norms of W_E and W_L, sum of squared weights, and the Furuta-style FFS/FCR "
               "(reconstructed).", training.progress),
    FigureSpec("extra_measures", "Cheap extra measures", "Activation sparsity, absolute weight entropy (and its "
               "scale-free twin) and the logit norm per parameter norm, with the test loss (dotted), each as the "
               "fraction of its move from its first to its last value: a curve past the dashed 0.5 has moved half way "
               "(docs/measures.md, \"Cheap extra measures\").", training.extra_measures),
    FigureSpec("fourier_norms", "Fourier norms of W_E and W_L", "Norm of each Fourier component of the embedding (over "
               "d_model) and of the neuron-logit map W_L = W_out·W_U (over neurons). Key frequencies in orange. Drag "
               "the slider to watch the spectrum become sparse.", circuit.fourier_norms, weights=True),
    FigureSpec("stars", "Star plots (MLP)", "PAIR explorable: every neuron's cos/sin coefficient at its frequency, "
               "input side (top) and output side (bottom), one panel per frequency group. Scrub checkpoints with the "
               "slider.", stars.star_plots, weights=True),
    FigureSpec("star_trajectory", "Star trajectories (MLP)", "The same input-side coefficients traced over "
               "checkpoints: neurons move from noise onto evenly spaced circles.", stars.star_trajectory, weights=True),
    FigureSpec("attention", "Attention patterns", "Attention paid by the final '=' position to the token a, for every "
               "input (a, b), one heatmap per head.", circuit.attention),
    FigureSpec("neurons", "MLP neuron activations", "Activations at '=' of a few neurons (one per large frequency "
               "cluster) over all (a, b): periodic patterns in a and b.", circuit.neuron_activations),
    FigureSpec("logit_fourier", "Logits in the 2D Fourier basis", "Norm (over outputs c) of the centred logits in the "
               "basis {const, cos k, sin k}⊗{const, cos k, sin k} over (a, b).", circuit.logit_fourier),
    FigureSpec("operation_logits", "Logit fit per operation", "A mixture of operations: each operation's logits "
               "read in its own basis and fitted by the waves cos/sin(w_k(i+j−m)) over Z_n; key frequencies in orange. "
               "An operation whose basis does not apply on the input side says why.", operations.operation_logit_fit),
    FigureSpec("operation_overlap", "Interference between operations", "A mixture of operations: how much the "
               "subspaces of the shared embedding W_E that carry each operation's key frequencies (in its own basis) "
               "overlap: mean cos² of their principal angles.", operations.operation_overlap),
    FigureSpec("clusters", "Neuron clusters and FVE", "Fraction of each neuron's variance over (a, b) explained by its "
               "best single frequency (3×3 block of its 2D DFT), and the size of each frequency cluster.",
               circuit.neuron_clusters),
    FigureSpec("ablations", "Ablations", "Loss after keeping only the key frequencies (restricted) or removing them "
               "(excluded); from analysis.json when present.", circuit.ablations),
    FigureSpec("interference", "Constructive interference", "For one input, the fitted cos(w_k(a+b−c)) waves of each "
               "key frequency over outputs c: they agree only at the answer c = a+b, so their sum peaks there.",
               circuit.interference),
    FigureSpec("excluded_per_k", "Excluded loss per key frequency", "Train loss with one key frequency's "
               "cos/sin(w_k(a+b)) directions removed from the logits, over training (Figure 15).",
               training.excluded_per_frequency),
    FigureSpec("logit_coefficients", "Logit coefficients over training", "Amplitude of each key frequency's "
               "cos(w_k(a+b−c)) term in the logits per checkpoint (Figure 14).", circuit.logit_coefficients),
    # the interpretability instruments (grokscope patch|probe|sae), shown once their command has run
    *(FigureSpec(*spec) for spec in interp.report_specs()),
]


def build_all(run: Run | str | Path, *, only: list[str] | None = None,
              log: Callable[[str], None] | None = None) -> list[FigureResult]:
    """Every figure of ``FIGURES`` for the run; a figure that cannot be drawn becomes a note, never an error."""
    run = as_run(run)
    out = []
    for spec in FIGURES:
        if only is not None and spec.key not in only:
            continue
        t0 = time.perf_counter()
        fig, note, applicable = _draw(partial(spec.build, run), log)
        res = FigureResult(spec.key, spec.title, spec.caption, fig, note, time.perf_counter() - t0, applicable)
        if log is not None:
            log(f"  {spec.key:<20} {'ok' if fig is not None else 'skipped: ' + note} ({res.seconds:.1f} s)")
        out.append(res)
    if run.config.task.kind == "multi" and (only is None or "operations" in only):
        out.extend(_operation_results(run, log))
    return out


def _draw(build: Callable[[], Any], log: Callable[[str], None] | None) -> tuple[Any, str, bool]:
    """``build()``'s result with an empty note, or None with the note saying why; and whether the figure applies to
    this kind of run at all (:class:`FigureNotApplicable`). Any other error becomes a note (and a logged traceback):
    one broken figure must not cost the whole report."""
    try:
        return build(), "", True
    except FigureNotApplicable as e:
        return None, str(e), False
    except FigureUnavailable as e:
        return None, str(e), True
    except Exception as e:  # noqa: BLE001 - one broken figure must not cost the whole report
        if log is not None:
            log(traceback.format_exc())
        return None, f"could not be drawn: {type(e).__name__}: {e}", True


def _operation_results(run: Run, log: Callable[[str], None] | None) -> list[FigureResult]:
    """A mixture's sections, one per operation in its own basis (key ``operation_{i}``)."""
    out = []
    for i, (formula, _basis, label, _why) in enumerate(operation_bases(run)):
        t0 = time.perf_counter()
        key, title, caption = f"operation_{i}", f"Operation {formula} ({label})", ""
        panel, note, _ = _draw(partial(operations.operation_panel, run, i), log)
        fig = None
        if panel is not None:
            title, caption, fig = panel
        out.append(FigureResult(key, title, caption, fig, note, time.perf_counter() - t0))
        if log is not None:
            log(f"  {key:<20} {'ok' if fig is not None else 'skipped: ' + note} ({out[-1].seconds:.1f} s)")
    return out
