r"""Modality cues :math:`\mathbf{h}^m` for users and items (MAGNET Eq. 7-8).

The paper's Eq. 7-8 are missing from its text. Following the project decision
(``REFERENCE.md`` section 2): the item cue is a learned projection of the raw item feature,
:math:`\mathbf{h}_i^m = W_m \mathbf{x}_i^m + \mathbf{b}_m \in \mathbb{R}^d`, and the user cue is
the mean of the item cues over the user's training items ("history pooling"),
:math:`\mathbf{h}_u^m = \frac{1}{|\mathcal{I}_u|}\sum_{i \in \mathcal{I}_u} \mathbf{h}_i^m`.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .adjacency import check_adjacency, sparse_mm
from .indexing import gather_rows

__all__ = ["ModalityCues", "batch_cues"]

Features = Union[Mapping[str, Tensor], Sequence[Tensor]]


def _num_rows(adj) -> int:
    return int(adj.sizes()[0]) if hasattr(adj, "sizes") else int(adj.size(0))


class ModalityCues(torch.nn.Module):
    r"""Per-modality item projections and user history pooling (MAGNET Eq. 7-8, decision).

    .. math::
        \mathbf{h}_i^m = \mathrm{Dropout}(W_m \mathbf{x}_i^m + \mathbf{b}_m), \qquad
        \mathbf{h}_u^m = \sum_i R_{ui}\, \mathbf{h}_i^m,

    where :math:`R` is the row-normalised ``[U, I]`` training matrix
    (:func:`~magnet_pyg.nn.adjacency.row_normalized`), so :math:`\mathbf{h}_u^m` is the mean
    over the user's training items. Any number of modalities with arbitrary names.

    Args:
        in_channels: ``{modality name: input feature size}``, in the order the cues are
            stacked (for example ``{"image": 128, "audio": 128}``).
        out_channels: cue size ``d`` (the ID-embedding size of the backbone).
        dropout: dropout probability on the item cues (training only).
        bias: whether the projections have a bias.

    Shapes:
        - **input:** ``x``: ``{name: [I, d_name]}`` (or a list in ``modalities`` order);
          ``user_item``: ``[U, I]`` row-normalised sparse matrix (optional).
        - **output:** ``(h_u, h_i)``: ``[U, M, d]`` (``None`` without ``user_item``) and
          ``[I, M, d]``, modalities stacked on dim 1 in ``modalities`` order.
    """

    def __init__(
        self,
        in_channels: Mapping[str, int],
        out_channels: int,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(in_channels, Mapping):
            raise ValueError("in_channels must map modality names to feature sizes")
        if out_channels < 1:
            raise ValueError(f"out_channels must be positive, got {out_channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        for name, size in in_channels.items():
            if int(size) < 1:
                raise ValueError(f"modality '{name}': input size must be positive, got {size}")
        self.modalities: List[str] = [str(k) for k in in_channels.keys()]
        self.in_channels: Dict[str, int] = {str(k): int(v) for k, v in in_channels.items()}
        self.out_channels = out_channels
        self.dropout = dropout
        self.proj = torch.nn.ModuleDict(
            {name: torch.nn.Linear(size, out_channels, bias=bias)
             for name, size in self.in_channels.items()})
        self.reset_parameters()

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    def reset_parameters(self) -> None:
        r"""Xavier-uniform projection weights, zero biases."""
        for lin in self.proj.values():
            torch.nn.init.xavier_uniform_(lin.weight)
            if lin.bias is not None:
                torch.nn.init.zeros_(lin.bias)

    def _features(self, x: Features) -> List[Tensor]:
        if isinstance(x, Mapping):
            missing = [m for m in self.modalities if m not in x]
            if missing:
                raise ValueError(f"missing features for modalities {missing}")
            return [x[m] for m in self.modalities]
        x = list(x)
        if len(x) != self.num_modalities:
            raise ValueError(f"expected {self.num_modalities} feature matrices, got {len(x)}")
        return x

    def item_cues(self, x: Features) -> Tensor:
        r"""Item cues :math:`\mathbf{h}_i^m`: ``[I, M, d]`` from ``{name: [I, d_name]}``."""
        feats = self._features(x)
        if not feats:
            raise ValueError("ModalityCues has no modality")
        hs = [self.proj[m](f) for m, f in zip(self.modalities, feats)]
        h = torch.stack(hs, dim=1)
        return F.dropout(h, p=self.dropout, training=self.training)

    @staticmethod
    def pool_users(h_items: Tensor, user_item: Tensor,
                   item_user: Optional[Tensor] = None) -> Tensor:
        r"""History pooling :math:`\mathbf{h}_u^m = \sum_i R_{ui} \mathbf{h}_i^m`.

        ``user_item`` must be a normalised sparse matrix (a raw ``edge_index`` or a binary
        matrix is refused with a :class:`ValueError`, see
        :func:`~magnet_pyg.nn.check_adjacency`); build it with
        :func:`~magnet_pyg.nn.row_normalized`.

        Args:
            h_items: ``[I, M, d]`` item cues.
            user_item: ``[U, I]`` row-normalised sparse matrix.
            item_user: optional pre-built transpose ``[I, U]`` of ``user_item`` (speeds up the
                backward pass, see :func:`~magnet_pyg.nn.adjacency.sparse_mm`).

        Returns:
            ``[U, M, d]`` user cues (zero for users without training items).
        """
        num_items, m, d = h_items.shape
        build = ("Build it with magnet_pyg.nn.row_normalized(edge_index, num_users, "
                 f"num_items={num_items}) from the [2, E] (user, item) training pairs")
        check_adjacency(user_item, None, num_items, "ModalityCues: user_item", build)
        if item_user is not None:
            check_adjacency(item_user, num_items, _num_rows(user_item), "ModalityCues: item_user",
                            "Pass the transpose of user_item: magnet_pyg.nn.transpose_csr(user_item)")
        out = sparse_mm(user_item, h_items.reshape(num_items, m * d), adj_t=item_user)
        return out.view(-1, m, d)

    @staticmethod
    def leave_one_out(h_u: Tensor, h_i: Tensor, degree: Tensor) -> Tensor:
        r"""User cues with the target item removed from the history pool,
        :math:`\mathbf h_u^{m,(-i)} = (|\mathcal I_u|\,\mathbf h_u^m - \mathbf h_i^m) / (|\mathcal I_u| - 1)`
        (zero when :math:`|\mathcal I_u| \le 1`).

        Use it for training triples :math:`(u, i, j)` whose positive :math:`i` is one of the
        user's training items, for the positive *and* the negative: the plain pool contains
        the positive itself, so a model scoring :math:`\mathbf h_u^\top \mathbf h_i` can fit
        training pairs through the :math:`\|\mathbf h_i\|^2 / |\mathcal I_u|` self-match, a
        shortcut that never exists for held-out items; and pooling differently for the two
        items of a triple would leak which one is the positive.

        Args:
            h_u: ``[B, M, d]`` pooled user cues (from :meth:`pool_users`, same item cues).
            h_i: ``[B, M, d]`` cues of the target items (the very tensors that were pooled).
            degree: ``[B]`` number of training items of each user.
        """
        deg = degree.to(h_u.dtype).view(-1, 1, 1)
        out = (deg * h_u - h_i) / (deg - 1).clamp(min=1)
        return torch.where(deg > 1, out, torch.zeros_like(out))

    def forward(self, x: Features, user_item: Optional[Tensor] = None,
                item_user: Optional[Tensor] = None) -> Tuple[Optional[Tensor], Tensor]:
        r"""Item cues and (when ``user_item`` is given) pooled user cues.

        Returns:
            ``(h_u [U, M, d] or None, h_i [I, M, d])``.
        """
        h_i = self.item_cues(x)
        h_u = None if user_item is None else self.pool_users(h_i, user_item, item_user)
        return h_u, h_i

    def extra_repr(self) -> str:
        return f"{self.in_channels}, out_channels={self.out_channels}, dropout={self.dropout}"


def batch_cues(cues: ModalityCues, features: Sequence[Tensor], history, users: Tensor,
               items: Sequence[Tensor]) -> Tuple[Tensor, List[Tensor]]:
    r"""Exact modality cues of a mini-batch (MAGNET Eq. 7-8 decision) without the full graph:
    item cues :math:`\mathbf h_i^m = W_m\mathbf x_i^m + \mathbf b_m` and the user history pooling
    :math:`\mathbf h_u^m = \frac{1}{|\mathcal I_u|}\sum_{i\in\mathcal I_u}\mathbf h_i^m`, computed
    only for the batch users and the items they need (the users' training items and ``items``).
    Dropout (training mode) is drawn once per needed item, shared by pooling and scoring.

    Args:
        cues: :class:`ModalityCues`.
        features: per modality ``[I, d_m]`` (on the model's device).
        history: the training pairs as a :class:`~magnet_pyg.data.CSRIndex` (anything with its
            ``gather(users) -> (row, item)`` and ``degree(users)``).
        users: ``[B]`` global user ids.
        items: item id tensors (for example ``pos``, ``neg``) whose cues are returned.

    Returns:
        ``h_u`` ``[B, M, d]`` and one ``[len(t), M, d]`` tensor per entry of ``items``.
    """
    device = users.device
    uu, u_inv = torch.unique(users, return_inverse=True)
    row, hist = history.gather(uu.cpu())
    deg = history.degree(uu.cpu()).clamp(min=1).float()
    row, hist, wgt = row.to(device), hist.to(device), (1.0 / deg)[row].to(device)
    sizes = [t.numel() for t in items]
    needed, inv = torch.unique(torch.cat([*items, hist]), return_inverse=True)
    h = cues.item_cues([f.index_select(0, needed) for f in features])          # [K, M, d]
    k, m, d = h.shape
    n_items = sum(sizes)
    h_hist = gather_rows(h, inv[n_items:]).reshape(-1, m * d) * wgt.unsqueeze(1)
    h_u = torch.zeros(uu.numel(), m * d, device=device, dtype=h.dtype).index_add_(0, row, h_hist)
    h_u = gather_rows(h_u.view(-1, m, d), u_inv)
    outs, start = [], 0
    for s in sizes:
        outs.append(gather_rows(h, inv[start:start + s]))
        start += s
    return h_u, outs
