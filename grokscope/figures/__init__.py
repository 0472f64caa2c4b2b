"""Plotly figures of a run, built by pure functions from its stored metrics, checkpoints and analysis.

Every builder takes a run (a :class:`~grokscope.store.run.Run` or a path) and returns a
``plotly.graph_objects.Figure``, so it shows in Jupyter::

    import grokscope.figures as gf
    gf.curves("runs/quick")          # loss (log) and accuracy, phases shaded, grok epoch marked
    gf.progress("runs/quick")        # the progress-measures panel (Nanda et al. Figure 7)

A builder that cannot draw its figure for a run (no checkpoints, no progress measures, not an MLP, ...)
raises :class:`FigureUnavailable` with a one-line reason. :func:`build_all` collects every figure and
turns those into notes; :func:`write_report` writes the self-contained ``report.html``.
Plotly is an optional dependency (``pip install 'grokscope[plot]'``).
"""

from __future__ import annotations

from grokscope.figures.data import FigureNotApplicable, FigureUnavailable

__all__ = [
    "FIGURES",
    "FigureNotApplicable",
    "FigureResult",
    "FigureUnavailable",
    "ablations",
    "attention",
    "build_all",
    "build_report",
    "compare_curves",
    "curves",
    "excluded_per_frequency",
    "extra_measures",
    "fourier_norms",
    "interference",
    "logit_coefficients",
    "logit_fourier",
    "neuron_activations",
    "neuron_clusters",
    "operation_curves",
    "operation_logit_fit",
    "operation_overlap",
    "operation_panel",
    "progress",
    "star_plots",
    "star_trajectory",
    "write_report",
]

_LAZY = {
    "curves": "training",
    "progress": "training",
    "excluded_per_frequency": "training",
    "extra_measures": "training",
    "compare_curves": "training",
    "fourier_norms": "circuit",
    "attention": "circuit",
    "neuron_activations": "circuit",
    "logit_fourier": "circuit",
    "neuron_clusters": "circuit",
    "ablations": "circuit",
    "interference": "circuit",
    "logit_coefficients": "circuit",
    "operation_curves": "operations",
    "operation_logit_fit": "operations",
    "operation_overlap": "operations",
    "operation_panel": "operations",
    "star_plots": "stars",
    "star_trajectory": "stars",
    "FIGURES": "registry",
    "FigureResult": "registry",
    "build_all": "registry",
    "build_report": "report",
    "write_report": "report",
}


def __getattr__(name: str):
    """Import the Plotly-based modules on first use, so ``import grokscope.figures`` works without Plotly."""
    if name in _LAZY:
        import importlib

        try:
            mod = importlib.import_module(f"grokscope.figures.{_LAZY[name]}")
        except ImportError as e:
            if "plotly" in str(e):
                raise ImportError("grokscope figures need Plotly: pip install 'grokscope[plot]'") from e
            raise
        return getattr(mod, name)
    raise AttributeError(f"module 'grokscope.figures' has no attribute {name!r}")
