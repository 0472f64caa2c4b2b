"""Sweeps: grids of configs run in parallel (local processes or Ray), indexed and drawn as phase diagrams.

    from grokscope.sweep import load_spec, run_sweep, load_sweep
    spec = load_spec("examples/sweeps/wd_fraction.json")        # or get_sweep_preset("wd-fraction"), make_spec(...)
    result = run_sweep(spec, "sweeps/wdf", workers=2)            # resumable: re-run to finish
    df = load_sweep("sweeps/wdf")                                # one row per cell: axes, phase, epochs, finals

Plotting lives in :mod:`grokscope.sweep.figures` (needs Plotly); Ray in :mod:`grokscope.sweep.ray_executor`.
"""

from grokscope.sweep.index import SweepIndex, aggregate_seeds, load_sweep, reclassify, refresh_index
from grokscope.sweep.layout import SweepDir, SweepError, is_sweep_dir
from grokscope.sweep.local import LocalExecutor, SweepPlan, SweepResult, plan_sweep, run_sweep
from grokscope.sweep.outcome import PHASES, Outcome, first_reach, liu_phase, outcome_from_metrics
from grokscope.sweep.presets import SWEEP_PRESETS, get_sweep_preset
from grokscope.sweep.spec import Axis, Cell, OutcomeParams, SweepSpec, SweepSpecError, expand, make_spec, spec_from_dict
from grokscope.sweep.spec_files import load_spec

__all__ = [
    "PHASES", "SWEEP_PRESETS", "Axis", "Cell", "LocalExecutor", "Outcome", "OutcomeParams", "SweepDir", "SweepError",
    "SweepIndex", "SweepPlan", "SweepResult", "SweepSpec", "SweepSpecError", "aggregate_seeds", "expand",
    "first_reach", "get_sweep_preset", "is_sweep_dir", "liu_phase", "load_spec", "load_sweep", "make_spec",
    "outcome_from_metrics", "plan_sweep", "reclassify", "refresh_index", "run_sweep", "spec_from_dict",
]
