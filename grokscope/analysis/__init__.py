"""Reverse engineering of one checkpoint: key frequencies, neuron clusters and FVE, logit fits, ablations,
attention fits, PAIR star-plot data, in the additive basis or in the task's own group basis
(:mod:`grokscope.analysis.basis`); dataclasses with ``to_dict()`` and plain-text tables. No file I/O here
except :mod:`grokscope.analysis.run` (a run's analysis.json and phases.json, through the store) and
:mod:`grokscope.analysis.cli` (the ``grokscope analyze`` subcommand)."""

from grokscope.analysis.basis import BasisAnalysis, analyze_in_basis
from grokscope.analysis.reverse import (
    CHOICES,
    SCHEMA_VERSION,
    AblationRow,
    Analysis,
    HeadFit,
    LogitFit,
    NeuronStats,
    StarNeuron,
    Table5Row,
    analyze_checkpoint,
    attention_fits,
    block_mask_table,
    logit_wave_fit,
    neuron_polynomial_fits,
    star_plot_data,
)
from grokscope.analysis.run import analyze_model, analyze_run, print_run_summary
from grokscope.analysis.tables import format_table, render_analysis, render_phases, render_summary, render_table5

__all__ = [
    "CHOICES", "SCHEMA_VERSION", "AblationRow", "Analysis", "BasisAnalysis", "HeadFit", "LogitFit", "NeuronStats",
    "StarNeuron", "Table5Row", "analyze_checkpoint", "analyze_in_basis", "analyze_model", "analyze_run",
    "attention_fits", "block_mask_table", "format_table", "logit_wave_fit", "neuron_polynomial_fits",
    "print_run_summary", "render_analysis", "render_phases", "render_summary", "render_table5", "star_plot_data",
]
