"""Training: config, datasets, distributed set-up, checkpoints, and the two-step training loop."""

from sparks.train.config import TrainConfig
from sparks.train.evaluation import evaluate
from sparks.train.loop import TrainingDiverged, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "evaluate", "train"]
