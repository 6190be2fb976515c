"""Training: config, datasets, distributed set-up, checkpoints, and the two-step training loop."""

from sparks.train.config import TrainConfig
from sparks.train.loop import TrainingDiverged, TrainResult, evaluate, train

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "evaluate", "train"]
