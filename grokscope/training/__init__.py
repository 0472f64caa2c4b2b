"""Training: the loop and its step, the optimiser and its schedule, the run recorder."""

from grokscope.training.lineage import Parent
from grokscope.training.loop import TrainingDiverged, loss_and_accuracy, resume, train, train_step
from grokscope.training.optim import lr_at
from grokscope.training.recorder import checkpoint_epochs

__all__ = ["Parent", "TrainingDiverged", "checkpoint_epochs", "loss_and_accuracy", "lr_at", "resume", "train",
           "train_step"]
