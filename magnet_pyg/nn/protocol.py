"""The protocol through which the trainers and the evaluator talk to every model.

A recommender is a :class:`torch.nn.Module` deriving from :class:`Recommender`. The trainers
(:mod:`magnet_pyg.train`) and the evaluator (:mod:`magnet_pyg.evaluate`) never import a
concrete model: they only call the methods below.

**Full-graph training and evaluation** (every model):

* :meth:`Recommender.prepare` turns the dataset (:class:`HeteroData`, see
  :mod:`magnet_pyg.data.schema`) into whatever the model's loss and inference need, once (for
  example a normalised sparse adjacency). The result is passed back as ``graph``.
* :meth:`Recommender.on_epoch_start` may replace ``graph`` for one epoch (FREEDOM's pruning).
* :meth:`Recommender.loss` returns the training loss of a batch of link-prediction samples
  ``(users, pos, neg)`` and a dict of scalar logs.
* :meth:`Recommender.inference` computes, without gradients, a state from which
  :meth:`Recommender.score` returns exact scores: ``[B, num_items]`` for all items when
  ``items`` is ``None`` (full ranking), or ``[B]`` for the given (user, item) pairs.
* :meth:`Recommender.epoch_logs`, :attr:`Recommender.default_patience` and
  :attr:`Recommender.min_epochs` feed the epoch records and early stopping.

**Neighbour-sampled training** (models that override :meth:`Recommender.sampled_loss`):

* :meth:`Recommender.sampling_spec` says which structural views the sampler must cover and
  how many hops the model propagates (one fanout per hop); a model that cannot train on
  sampled subgraphs raises :class:`SampledTrainingUnsupported` there, saying why, before
  anything heavy starts;
* :meth:`Recommender.prepare_sampled` builds the model's own per-run context (for example
  MAGNET's item features and training history), without any full-graph adjacency;
* :meth:`Recommender.sampled_loss` returns the loss of one
  :class:`~magnet_pyg.nn.subgraph.SampledBatch` (the helpers of :mod:`magnet_pyg.nn.subgraph`
  propagate over its subgraph);
* :meth:`Recommender.layerwise_inference` computes the exact inference state layer by layer
  in node chunks (:mod:`magnet_pyg.nn.layerwise`); the default builds the full graph (and the
  trainers' ``"auto"`` inference then evaluates on the model's full graph, built once).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, NamedTuple, Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

if TYPE_CHECKING:  # pragma: no cover
    from .layerwise import LayerwiseGraph
    from .subgraph import SampledBatch, SampledGraph

__all__ = ["Logs", "Recommender", "SamplingSpec", "SampledTrainingUnsupported", "dot_score"]

Logs = Dict[str, float]


class SamplingSpec(NamedTuple):
    """What neighbour sampling needs to know about a model.

    Attributes:
        views: structural views whose relations the sampler covers: ``("ui",)`` (observed
            user-item graph) or ``("ui", "uig")`` (plus MAGNET's content-induced edges), see
            :data:`~magnet_pyg.nn.subgraph.VIEW_RELATIONS`.
        num_layers: propagation hops of the model (the fanout has one entry per hop).
    """
    views: Tuple[str, ...]
    num_layers: int


class SampledTrainingUnsupported(NotImplementedError, ValueError):
    """A model that cannot train on neighbour-sampled subgraphs (the message says why).
    A :class:`ValueError` too, so that callers reporting bad settings report this one."""


class Recommender(torch.nn.Module):
    """Base class of every model (see the module docstring)."""

    #: default early-stopping patience (validations without improvement)
    default_patience: int = 10
    #: why the model has no neighbour-sampled training (models without :meth:`sampled_loss`)
    sampling_unsupported_reason: str = "it defines no loss over a sampled subgraph (sampled_loss)"

    @property
    def min_epochs(self) -> int:
        """Epochs to train before early stopping may stop the run (default 0)."""
        return 0

    # ------------------------------------------------------------------ full graph
    def prepare(self, data: HeteroData) -> Any:
        """Build the model's graph inputs from ``data`` once (default: ``data`` itself)."""
        return data

    def on_epoch_start(self, graph: Any, epoch: int, generator: torch.Generator) -> Any:
        """Called before each training epoch with the graph of the training mode (what
        :meth:`prepare` returned, or the :class:`~magnet_pyg.nn.subgraph.SampledGraph`); may
        return a modified graph for this epoch (for example FREEDOM's pruned adjacency). Must
        draw randomness from ``generator`` only."""
        return graph

    def loss(self, graph: Any, users: Tensor, pos: Tensor, neg: Tensor) -> Tuple[Tensor, Logs]:
        """``(loss, logs)`` of ``B`` samples (``users``, ``pos``, ``neg``: ``[B]`` ids)."""
        raise NotImplementedError(f"{type(self).__name__} defines no loss")

    @torch.no_grad()
    def inference(self, graph: Any) -> Any:
        """The state :meth:`score` ranks from (computed without gradients)."""
        raise NotImplementedError(f"{type(self).__name__} defines no inference")

    def score(self, state: Any, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        """``[B, I]`` scores of all items (``items=None``) or ``[B]`` scores of the pairs."""
        raise NotImplementedError(f"{type(self).__name__} defines no score")

    def epoch_logs(self) -> Logs:
        """Extra per-epoch numbers for ``results.json`` (for example routing statistics)."""
        return {}

    # ------------------------------------------------------------------ sampled subgraphs
    @classmethod
    def supports_sampled_training(cls) -> bool:
        """Whether the class defines :meth:`sampled_loss` (the options of one instance may
        still rule it out: :meth:`sampling_spec` says so)."""
        return cls.sampled_loss is not Recommender.sampled_loss

    @classmethod
    def supports_layerwise_inference(cls) -> bool:
        """Whether the class computes its inference in node chunks (overrides
        :meth:`layerwise_inference`)."""
        return cls.layerwise_inference is not Recommender.layerwise_inference

    def sampling_spec(self) -> SamplingSpec:
        """Views and hops to sample for this model. Raises :class:`SampledTrainingUnsupported`
        (or a :class:`ValueError` for options that rule sampling out) before anything heavy."""
        raise SampledTrainingUnsupported(
            f"{type(self).__name__} does not support neighbour-sampled training: "
            f"{self.sampling_unsupported_reason}; train it on the full graph")

    def prepare_sampled(self, data: HeteroData) -> Any:
        """The model's own context for sampled training, built once without any full-graph
        adjacency; reachable as ``graph.context`` in :meth:`sampled_loss` (default ``None``)."""
        return None

    def sampled_loss(self, graph: "SampledGraph", batch: "SampledBatch") -> Tuple[Tensor, Logs]:
        """``(loss, logs)`` of one sampled mini-batch; ``graph`` holds the sampling settings
        (``views``, ``rescale``) and the model's :meth:`prepare_sampled` context."""
        raise SampledTrainingUnsupported(
            f"{type(self).__name__} does not support neighbour-sampled training: "
            f"{self.sampling_unsupported_reason}")

    @torch.no_grad()
    def layerwise_inference(self, graph: "LayerwiseGraph", chunk_size: int = 65536) -> Any:
        """The inference state computed layer by layer in chunks of ``chunk_size`` nodes
        (:mod:`magnet_pyg.nn.layerwise`). The default has no chunked form: it builds the
        model's full graph from ``graph.data`` once and runs :meth:`inference`."""
        return self.inference(self.prepare(graph.data))


def dot_score(state: Tuple[Tensor, Tensor], users: Tensor, items: Optional[Tensor] = None) -> Tensor:
    """Inner-product scores from ``state = (user_emb [U, d], item_emb [I, d])``:
    ``[B, I]`` for all items when ``items`` is ``None``, else ``[B]`` for the pairs."""
    user_emb, item_emb = state
    u = user_emb[users]
    if items is None:
        return u @ item_emb.t()
    return (u * item_emb[items]).sum(-1)
