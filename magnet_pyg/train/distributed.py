r"""Large-graph training: neighbour-sampled mini-batches, exact layer-wise evaluation and
multi-process data parallelism (:class:`torch.nn.parallel.DistributedDataParallel`).

All of it is the one epoch loop of :class:`~magnet_pyg.train.Trainer` with another batch source
(:mod:`magnet_pyg.train.sources`):

* **sampled training** (``ScaleConfig.fanout``): each batch brings its sampled ``L``-hop
  subgraph (:mod:`magnet_pyg.train.sampled`), prepared by CPU DataLoader workers when
  ``sampling_workers > 0``, for any model with a
  :meth:`~magnet_pyg.nn.protocol.Recommender.sampled_loss`; evaluation then uses the exact
  layer-wise inference (:mod:`magnet_pyg.evaluate.layerwise`), so no full-graph adjacency is
  ever built;
* **data parallelism** under ``torchrun`` (or any launcher that initialises
  :mod:`torch.distributed`, see :mod:`magnet_pyg.train.process_group`): every rank draws the
  same global batch, takes its contiguous shard of it and computes the loss on that shard
  (full-graph propagation or its own sampled subgraph); DDP averages the gradients, and each
  rank's loss is scaled by ``world_size * n_rank / n_batch`` so that the update equals the one
  of a single process on the whole batch for losses that are means over samples (BPR, the L2
  penalty). Metrics, checkpoints and ``results.json`` come from rank 0 only. Backends: ``gloo``
  on CPU, ``nccl`` on GPU (one GPU per rank, ``cuda:LOCAL_RANK``).

Batch-level terms that are not means over samples (MAGNET's in-batch view contrast, the
coverage regulariser on the batch-mean routing and the entropy statistics of the schedule) are
computed on each rank's shard, as usual under DDP; the schedule state (a module buffer) follows
rank 0, since DDP broadcasts buffers at every forward.

:class:`LargeGraphTrainer` is the :class:`~magnet_pyg.train.Trainer` with a
:class:`ScaleConfig` always given (so ``results.json`` records ``config.scale`` and
``world_size`` even for one process on the full graph).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from .process_group import (check_world_size, env_world_size, init_distributed, rank_device,
                            resolve_backend, shard, world_info)
from .sources import ScaleConfig
from .trainer import TrainConfig, Trainer

__all__ = ["ScaleConfig", "LargeGraphTrainer", "world_info", "env_world_size", "init_distributed",
           "check_world_size", "rank_device", "resolve_backend", "shard"]


class LargeGraphTrainer(Trainer):
    """:class:`~magnet_pyg.train.Trainer` for large graphs and several processes (see the
    module docstring).

    Args:
        config: optimisation and protocol settings (``batch_size`` is the **global** batch,
            split across ranks).
        scale: sampling / inference / distributed options (default: full graph, auto inference).
        extra_config: recorded under ``config`` in ``results.json``.
    """

    def __init__(self, config: TrainConfig, scale: Optional[ScaleConfig] = None,
                 extra_config: Optional[Dict[str, Any]] = None):
        super().__init__(config, extra_config, scale=scale if scale is not None else ScaleConfig())
