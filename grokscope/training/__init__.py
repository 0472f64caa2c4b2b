"""Training: the loop, the step, the learning-rate schedule."""

from grokscope.training.loop import (
    GROK_THRESHOLD,
    TrainingDiverged,
    checkpoint_epochs,
    loss_and_accuracy,
    lr_at,
    resume,
    train,
    train_step,
)

__all__ = [
    "GROK_THRESHOLD",
    "TrainingDiverged",
    "checkpoint_epochs",
    "loss_and_accuracy",
    "lr_at",
    "resume",
    "train",
    "train_step",
]
