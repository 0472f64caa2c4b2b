"""grokscope: train small networks on algorithmic tasks, watch them grok, reverse-engineer what they learned.

The public API::

    import grokscope
    cfg = grokscope.get_preset("quick")
    run = grokscope.train(cfg, "runs/quick")
    run = grokscope.load_run("runs/quick")
    run.config, run.metrics, run.checkpoints, run.load_model(step)
"""

from grokscope.config import (
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    OptimConfig,
    TaskConfig,
    TrainConfig,
    apply_overrides,
)
from grokscope.models import MLPModel, Transformer, build_model
from grokscope.presets import PRESETS, get_preset
from grokscope.store import Run, RunError, load_run
from grokscope.tasks import ModularTask, make_task, parse_formula
from grokscope.training import TrainingDiverged, resume, train

__all__ = [
    "PRESETS",
    "ConfigError",
    "ExperimentConfig",
    "MLPModel",
    "ModelConfig",
    "ModularTask",
    "OptimConfig",
    "Run",
    "RunError",
    "TaskConfig",
    "TrainConfig",
    "Transformer",
    "TrainingDiverged",
    "apply_overrides",
    "build_model",
    "get_preset",
    "load_run",
    "make_task",
    "parse_formula",
    "resume",
    "train",
]
