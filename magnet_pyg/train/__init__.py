"""Training: link-prediction sample batches, the trainer and its batch sources (full graph,
neighbour-sampled, sharded across processes), checkpoints, weight averaging."""
from .averaging import WeightAverage
from .checkpoint import atomic_json_dump, atomic_torch_save, load_checkpoint
from .device import check_device
from .sampling import LinkSampler
from .sources import (BatchSource, FullGraphSource, SampledSource, ScaleConfig, ShardedSource,
                      make_source)
from .optim import Adam
from .trainer import TrainConfig, Trainer

__all__ = ["atomic_json_dump", "atomic_torch_save", "load_checkpoint", "Adam", "LinkSampler", "TrainConfig",
           "Trainer", "WeightAverage", "check_device", "ScaleConfig", "BatchSource", "FullGraphSource",
           "SampledSource", "ShardedSource", "make_source"]
