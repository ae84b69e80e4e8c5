"""The small protocol through which the trainer and the evaluator talk to every model.

A recommender is an :class:`torch.nn.Module` with four methods:

* :meth:`Recommender.prepare` turns the dataset (:class:`HeteroData`, see
  :mod:`magnet_pyg.data.schema`) into whatever its ``forward`` needs, once (for example
  a normalised sparse adjacency). The result is passed back as ``graph``.
* :meth:`Recommender.loss` returns the training loss of a batch of link-prediction
  samples ``(users, pos, neg)`` and a dict of scalar logs.
* :meth:`Recommender.inference` computes, without gradients, a state from which
* :meth:`Recommender.score` returns exact scores: ``[B, num_items]`` for all items when
  ``items`` is ``None`` (full ranking), or ``[B]`` for the given (user, item) pairs.

The trainer never imports a concrete model; it only calls these methods (plus the optional
hooks :meth:`on_epoch_start` and :meth:`epoch_logs`).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

Logs = Dict[str, float]


class Recommender(torch.nn.Module):
    """Base class of every model in :mod:`magnet_pyg.models` (see the module docstring)."""

    #: default early-stopping patience (epochs without validation improvement)
    default_patience: int = 10

    def prepare(self, data: HeteroData) -> Any:
        """Build the model's graph inputs from ``data`` once (default: ``data`` itself)."""
        return data

    def on_epoch_start(self, graph: Any, epoch: int, generator: torch.Generator) -> Any:
        """Called before each training epoch; may return a modified ``graph`` for this epoch
        (for example FREEDOM's pruned adjacency). Must draw randomness from ``generator``."""
        return graph

    def loss(self, graph: Any, users: Tensor, pos: Tensor, neg: Tensor) -> Tuple[Tensor, Logs]:
        raise NotImplementedError

    @torch.no_grad()
    def inference(self, graph: Any) -> Any:
        raise NotImplementedError

    def score(self, state: Any, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        raise NotImplementedError

    def epoch_logs(self) -> Logs:
        """Extra per-epoch numbers for ``results.json`` (for example routing statistics)."""
        return {}



def dot_score(state: Tuple[Tensor, Tensor], users: Tensor, items: Optional[Tensor] = None) -> Tensor:
    """Inner-product scores from ``state = (user_emb [U, d], item_emb [I, d])``:
    ``[B, I]`` for all items when ``items`` is ``None``, else ``[B]`` for the pairs."""
    user_emb, item_emb = state
    u = user_emb[users]
    if items is None:
        return u @ item_emb.t()
    return (u * item_emb[items]).sum(-1)
