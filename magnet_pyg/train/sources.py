"""Where the training batches of an epoch come from: the batch sources of the trainer's one
epoch loop (:class:`~magnet_pyg.train.Trainer`).

Every epoch the trainer draws the global ``(users, pos, neg)`` batches of
:class:`~magnet_pyg.train.LinkSampler` and hands them to a :class:`BatchSource`, which turns
each into what the model's loss consumes:

* :class:`FullGraphSource`: the ids themselves, for :meth:`Recommender.loss
  <magnet_pyg.nn.protocol.Recommender.loss>` over the model's full graph (every model);
* :class:`SampledSource`: a neighbour-sampled subgraph per batch
  (:class:`~magnet_pyg.train.sampled.SubgraphSampler`), for :meth:`Recommender.sampled_loss
  <magnet_pyg.nn.protocol.Recommender.sampled_loss>`;
* :class:`ShardedSource`: wraps either one under several processes: each rank takes its
  contiguous shard of every global batch, with the shard's share of the batch as weight.

Early stopping, logging, checkpoints, resume, weight averaging, validation cadence,
``finish`` and deterministic kernels belong to the loop and are therefore the same for every
source. :class:`ScaleConfig` holds the options that choose and configure the source and the
inference used for evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, List, Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..nn.protocol import Logs
from .process_group import shard
from .sampled import build_sampled_graph, check_fanout, check_fanout_layers, check_sampling_backend

__all__ = ["ScaleConfig", "BatchSource", "FullGraphSource", "SampledSource", "ShardedSource",
           "make_source"]

Triplet = Tuple[Tensor, Tensor, Tensor]


@dataclass
class ScaleConfig:
    """Large-graph options: neighbour sampling, evaluation inference and the process group.
    Validated when constructed.

    Attributes:
        fanout: neighbours sampled per layer and relation (``-1`` = all); ``None`` trains on the
            full graph.
        sampling_workers: CPU DataLoader workers preparing the sampled subgraphs.
        rescale: unbiased rescaling of sampled edges (:func:`~magnet_pyg.nn.subgraph.view_subgraph`).
        chunk_size: nodes per chunk of the layer-wise inference.
        inference: ``"auto"`` (layer-wise after sampled training for models with a chunked
            inference, else the model's own full-graph inference), ``"full"`` or ``"layerwise"``.
        backend: ``"auto"`` (``nccl`` on CUDA, ``gloo`` on CPU), ``"gloo"`` or ``"nccl"``.
        find_unused_parameters: passed to DDP.
    """
    fanout: Optional[List[int]] = None
    sampling_workers: int = 0
    rescale: bool = True
    chunk_size: int = 65536
    inference: str = "auto"
    backend: str = "auto"
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field (the fanout's entries here, its length against the model's layers
        when the trainer meets the model)."""
        if self.fanout is not None:
            self.fanout = check_fanout(self.fanout)
        if self.sampling_workers < 0:
            raise ValueError(f"sampling_workers must be >= 0, got {self.sampling_workers}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.inference not in ("auto", "full", "layerwise"):
            raise ValueError(f"inference must be 'auto', 'full' or 'layerwise', got '{self.inference}'")
        if self.backend not in ("auto", "gloo", "nccl"):
            raise ValueError(f"backend must be 'auto', 'gloo' or 'nccl', got '{self.backend}'")

    @property
    def sampled(self) -> bool:
        return self.fanout is not None

    def inference_mode(self, model=None) -> str:
        """``"layerwise"`` or ``"full"``. ``"auto"`` is layer-wise after sampled training when
        the ``model`` has a chunked inference
        (:meth:`~magnet_pyg.nn.protocol.Recommender.supports_layerwise_inference`), else full."""
        if self.inference == "auto":
            chunked = model is None or model.supports_layerwise_inference()
            return "layerwise" if self.sampled and chunked else "full"
        return self.inference


class BatchSource:
    """Turns the epoch's global ``(users, pos, neg)`` batches into loss inputs (see the module
    docstring). The trainer calls, in order: :meth:`check` (before anything heavy),
    :meth:`prepare` (once), then per epoch :meth:`epoch_graph` and, per batch of
    :meth:`batches`, :meth:`loss`."""

    #: whether the loss reads sampled subgraphs (evaluation then defaults to layer-wise)
    sampled: bool = False

    def check(self, model) -> None:
        """Refuse a model this source cannot train, before anything heavy starts."""

    def prepare(self, model, data: HeteroData) -> Any:
        """The run's ``graph`` (built once)."""
        raise NotImplementedError

    def epoch_graph(self, model, graph: Any, epoch: int, generator: torch.Generator) -> Any:
        """This epoch's graph (:meth:`~magnet_pyg.nn.protocol.Recommender.on_epoch_start`)."""
        return model.on_epoch_start(graph, epoch, generator)

    def batches(self, graph: Any, triplets: Iterable[Triplet], device: torch.device
                ) -> Iterator[Tuple[Any, float]]:
        """``(batch, weight)`` per global batch, in order; ``weight`` is the share of the global
        batch that ``batch`` holds (1 in one process)."""
        raise NotImplementedError

    def loss(self, model, graph: Any, batch: Any) -> Tuple[Tensor, Logs]:
        raise NotImplementedError


class FullGraphSource(BatchSource):
    """Full-graph training: :meth:`~magnet_pyg.nn.protocol.Recommender.prepare` once, then
    :meth:`~magnet_pyg.nn.protocol.Recommender.loss` on the id triplets (every model)."""

    def prepare(self, model, data: HeteroData) -> Any:
        return model.prepare(data)

    def batches(self, graph, triplets, device):
        for users, pos, neg in triplets:
            yield (users.to(device), pos.to(device), neg.to(device)), 1.0

    def loss(self, model, graph, batch):
        users, pos, neg = batch
        return model.loss(graph, users, pos, neg)


class SampledSource(BatchSource):
    """Neighbour-sampled training: one sampled subgraph per batch
    (:class:`~magnet_pyg.train.sampled.SubgraphSampler`, ``scale.sampling_workers`` loader
    workers), consumed by :meth:`~magnet_pyg.nn.protocol.Recommender.sampled_loss`; no
    full-graph adjacency is built.

    Args:
        scale: a :class:`ScaleConfig` with a ``fanout``.
    """

    sampled = True

    def __init__(self, scale: ScaleConfig):
        if not scale.sampled:
            raise ValueError("SampledSource needs a ScaleConfig with a fanout")
        self.scale = scale
        self.spec = None

    def check(self, model) -> None:
        self.spec = model.sampling_spec()
        check_fanout_layers(self.scale.fanout, self.spec.num_layers)
        check_sampling_backend()

    def prepare(self, model, data):
        if self.spec is None:
            self.check(model)
        return build_sampled_graph(model, self.spec, data, self.scale.fanout,
                                   self.scale.sampling_workers, self.scale.rescale)

    def batches(self, graph, triplets, device):
        for batch in graph.sampler.iterate(list(triplets)):
            yield batch.to(device), 1.0

    def loss(self, model, graph, batch):
        return model.sampled_loss(graph, batch)


class ShardedSource(BatchSource):
    """Data parallelism over ``world_size`` ranks: rank ``rank`` takes its contiguous shard of
    every global batch (:func:`~magnet_pyg.train.process_group.shard`) and passes it to
    ``inner``; the weight of a batch is the shard's share of the global batch (0 for the
    stand-in sample of an empty shard)."""

    def __init__(self, inner: BatchSource, rank: int, world_size: int):
        self.inner, self.rank, self.world_size = inner, int(rank), int(world_size)
        self.sampled = inner.sampled

    def check(self, model) -> None:
        self.inner.check(model)

    def prepare(self, model, data):
        return self.inner.prepare(model, data)

    def epoch_graph(self, model, graph, epoch, generator):
        return self.inner.epoch_graph(model, graph, epoch, generator)

    def batches(self, graph, triplets, device):
        shards = [shard(u, p, n, self.rank, self.world_size) for u, p, n in triplets]
        inner = self.inner.batches(graph, [s[:3] for s in shards], device)
        for (batch, _), s in zip(inner, shards):
            yield batch, s[3]

    def loss(self, model, graph, batch):
        return self.inner.loss(model, graph, batch)


def make_source(scale: Optional[ScaleConfig]) -> BatchSource:
    """:class:`SampledSource` for a ``scale`` with a fanout, else :class:`FullGraphSource`."""
    if scale is not None and scale.sampled:
        return SampledSource(scale)
    return FullGraphSource()
