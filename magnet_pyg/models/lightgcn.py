"""LightGCN (He et al., SIGIR 2020) on the package's shared LGConv encoder."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.schema import num_items, num_users, split_edge_index
from ..nn.adjacency import bipartite_normalized_adjacency
from ..nn.dual_view import DualViewEncoder
from ..nn.layerwise import LayerwiseGraph, layerwise_propagate
from ..nn.losses import bpr_loss, embedding_l2, triple_embedding_l2
from ..nn.indexing import gather_rows
from ..nn.seed_propagation import encode_seeds
from ..nn.subgraph import SampledBatch, SampledGraph
from .base import Logs, Recommender, SamplingSpec, dot_score
from .config import model_config


class LightGCN(Recommender):
    r"""LightGCN: :math:`\mathbf{z} = \frac{1}{L+1}\sum_{\ell=0}^{L} \hat A^\ell \mathbf{e}^{(0)}`
    over the training user-item graph, scored by inner products and trained with BPR plus a
    batch L2 penalty on the layer-0 embeddings. This is MAGNET's backbone in single view
    (Eq. 4-5) and equals :class:`torch_geometric.nn.models.LightGCN` with
    ``alpha = 1 / (L + 1)``.

    Args:
        num_users: ``U``.
        num_items: ``I``.
        embedding_dim: ``d``.
        num_layers: ``L``.
        reg_weight: weight of the layer-0 embedding L2 penalty.
        propagation: ``"spmm"`` or ``"lgconv"`` (see :class:`~magnet_pyg.nn.DualViewEncoder`).
    """

    default_patience = 20

    def __init__(self, num_users: int, num_items: int, embedding_dim: int = 64, num_layers: int = 2,
                 reg_weight: float = 1e-4, propagation: str = "spmm"):
        super().__init__()
        self.reg_weight = reg_weight
        self.encoder = DualViewEncoder(num_users, num_items, embedding_dim, num_layers, propagation)

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()

    def prepare(self, data: HeteroData) -> Tensor:
        """The ``[U+I, U+I]`` normalised adjacency of the training graph."""
        device = self.encoder.embedding.weight.device
        adj = bipartite_normalized_adjacency(split_edge_index(data, "train"), num_users(data), num_items(data))
        return adj.to(device)

    def forward(self, adj: Tensor) -> Tuple[Tensor, Tensor]:
        """``([U, d], [I, d])`` final user and item embeddings."""
        return self.encoder.split(self.encoder(adj)[0])

    def loss(self, adj: Tensor, users: Tensor, pos: Tensor, neg: Tensor) -> Tuple[Tensor, Logs]:
        zu, zi = self(adj)
        u = zu[users]
        rec = bpr_loss((u * zi[pos]).sum(-1), (u * zi[neg]).sum(-1))
        e0 = self.encoder.embedding.weight
        U = self.encoder.num_users
        reg = embedding_l2(e0[users], e0[U + pos], e0[U + neg])
        return rec + self.reg_weight * reg, {"bpr": rec.detach(), "reg": reg.detach()}

    @torch.no_grad()
    def inference(self, adj: Tensor) -> Tuple[Tensor, Tensor]:
        return self(adj)

    def score(self, state, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        return dot_score(state, users, items)

    # ------------------------------------------------------------------ sampled subgraphs
    def sampling_spec(self) -> SamplingSpec:
        """The observed view, one fanout per propagation layer."""
        return SamplingSpec(("ui",), self.encoder.num_layers)

    def sampled_loss(self, graph: SampledGraph, batch: SampledBatch) -> Tuple[Tensor, Logs]:
        """:meth:`loss` on the batch's sampled subgraph (BPR on the seed embeddings plus the
        layer-0 L2 of the batch); equal to it with fanout ``-1``."""
        z, _, _ = encode_seeds(self.encoder, batch, ("ui",), graph.rescale)
        u, p, n = (gather_rows(z, r) for r in batch.seed_index())
        rec = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        reg = triple_embedding_l2(self.encoder.embedding.weight, self.encoder.num_users,
                                  batch.users, batch.pos, batch.neg)
        return rec + self.reg_weight * reg, {"bpr": rec.detach(), "reg": reg.detach()}

    @torch.no_grad()
    def layerwise_inference(self, graph: LayerwiseGraph, chunk_size: int = 65536) -> Tuple[Tensor, Tensor]:
        """:meth:`inference` computed layer by layer in node chunks."""
        return self.encoder.split(layerwise_propagate(self.encoder, graph, "ui", chunk_size))

#: Hyper-parameters of :class:`LightGCN`: its constructor's keyword arguments, with the
#: constructor's types and defaults (:func:`~magnet_pyg.models.config.model_config`).
LightGCNConfig = model_config(LightGCN, "LightGCNConfig")
