"""grokscope: train small networks on algorithmic tasks, watch them grok, reverse-engineer what they learned.

The public API::

    import grokscope
    cfg = grokscope.get_preset("quick")
    run = grokscope.train(cfg, "runs/quick")
    run = grokscope.load_run("runs/quick")
    run.config, run.metrics, run.checkpoints, run.load_model(step)
    grokscope.load_sweep("sweeps/wdf")      # a sweep's index: one DataFrame row per cell
    grokscope.to_hooked_transformer(run)          # TransformerLens (extra 'tl'; imported only when called)
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _dist_version

from grokscope.analysis.run import analyze_model
from grokscope.config import (
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    OptimConfig,
    TaskConfig,
    TrainConfig,
    apply_overrides,
)
from grokscope.interop import from_hooked_transformer, hooked_transformer_config, to_hooked_transformer
from grokscope.models import MLPModel, Transformer, build_model, register_model, registered_models
from grokscope.presets import PRESETS, get_preset
from grokscope.store import Run, RunError, load_run
from grokscope.sweep.index import load_sweep
from grokscope.tasks import (
    ModularTask,
    function_task,
    make_task,
    parse_formula,
    register_task,
    registered_tasks,
    table_task,
)
from grokscope.training import Parent, TrainingDiverged, resume, train

try:
    __version__ = _dist_version("grokscope")
except _PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

__all__ = [
    "PRESETS", "ConfigError", "ExperimentConfig", "MLPModel", "ModelConfig", "ModularTask", "OptimConfig",
    "Parent", "Run", "RunError", "TaskConfig", "TrainConfig", "Transformer", "TrainingDiverged", "analyze_model",
    "apply_overrides", "build_model", "from_hooked_transformer", "get_preset", "hooked_transformer_config",
    "load_run", "load_sweep", "function_task", "make_task", "parse_formula", "register_model", "register_task",
    "registered_models", "registered_tasks", "resume", "table_task", "to_hooked_transformer", "train",
]
