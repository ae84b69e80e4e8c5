"""Training: link-prediction sample batches, the trainer, checkpoints, weight averaging."""
from .averaging import WeightAverage
from .checkpoint import atomic_json_dump, atomic_torch_save, load_checkpoint
from .sampling import LinkSampler
from .trainer import TrainConfig, Trainer, check_device

__all__ = ["atomic_json_dump", "atomic_torch_save", "load_checkpoint", "LinkSampler", "TrainConfig",
           "Trainer", "WeightAverage", "check_device"]
