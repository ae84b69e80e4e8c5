r"""Frozen item-item graphs from content features (FREEDOM and LATTICE style), shared by
FREEDOM, CRANE, AnchorRec and RecGOAT.

* :func:`knn_edge_index`: exact top-``k`` cosine neighbours of every item as an edge list;
* :func:`knn_normalized_adjacency`: FREEDOM's binary top-``k`` graph :math:`S^m`, normalised;
* :func:`item_graph_weights` and :func:`modality_item_graph`: the weighted sum
  :math:`S = \sum_m w_m S^m` over the modalities (MMRec's image weight 0.1 by default).
"""
from __future__ import annotations

from typing import List, Mapping, Optional, Sequence

import torch
from torch import Tensor

from .knn import knn_search
from .sparse import coalesced_csr

__all__ = ["knn_edge_index", "knn_normalized_adjacency", "MMREC_IMAGE_WEIGHT", "IMAGE_MODALITIES",
           "item_graph_weights", "modality_item_graph"]


@torch.no_grad()
def knn_edge_index(x: Tensor, k: int, include_self: bool = True) -> Tensor:
    r"""Exact top-``k`` cosine neighbours of every row of ``x`` as an edge list, via
    :func:`~magnet_pyg.graph.knn.knn_search` (``torch`` backend: exact, chunked, ties broken by
    the smaller index, zero-norm rows without neighbours).

    Args:
        x: ``[N, d]`` features.
        k: neighbours per row (clipped to ``N`` or ``N - 1``).
        include_self: make row ``n`` one of its own ``k`` neighbours (FREEDOM and LATTICE take
            the plain top-``k`` of the similarity matrix, whose diagonal is the maximum): the
            row itself plus its top ``k - 1`` other rows. Otherwise the top ``k`` other rows.

    Returns:
        ``[2, E]`` long tensor of (row, neighbour) pairs, row-major, on ``x.device``
        (``E = N k`` unless rows have zero norm).
    """
    n = x.size(0)
    k = min(int(k), n if include_self else n - 1)
    if k < 1:
        raise ValueError(f"k must be >= 1 (N = {n}, include_self={include_self})")
    rows = torch.arange(n, device=x.device)
    parts = [torch.stack([rows, rows])] if include_self else []
    others = k - 1 if include_self else k
    if others > 0:
        index, _ = knn_search(x.float(), others, backend="torch", device=x.device, progress=False)
        index = index.to(x.device)
        row = rows.unsqueeze(1).expand_as(index)
        ok = index >= 0
        parts.append(torch.stack([row[ok], index[ok]]))
    ei = torch.cat(parts, dim=1)
    return ei[:, torch.argsort(ei[0] * n + ei[1], stable=True)] if include_self else ei


def knn_normalized_adjacency(x: Tensor, k: int, include_self: bool = True) -> Tensor:
    r"""FREEDOM's frozen modality graph :math:`S^m` (its Eq. 1-3, as in LATTICE's code).

    The binary top-``k`` graph :math:`A` (:math:`a_{ij} = 1` iff ``j`` is among the ``k``
    most cosine-similar items of ``i``) normalised as :math:`D^{-1/2} A D^{-1/2}` with
    :math:`D` the **row** degree, exactly as FREEDOM's ``compute_normalized_laplacian``. With
    binary top-``k`` rows every degree is ``k``, so every non-zero equals :math:`1/k`.

    Returns:
        ``[N, N]`` ``torch.sparse_csr`` tensor (not symmetric).
    """
    ei = knn_edge_index(x, k, include_self)
    n = x.size(0)
    w = torch.ones(ei.size(1), dtype=torch.float32, device=x.device)
    deg = torch.zeros(n, device=x.device).scatter_add_(0, ei[0], w)
    dis = deg.pow(-0.5).masked_fill_(deg == 0, 0.0)
    value = dis[ei[0]] * dis[ei[1]]
    return coalesced_csr(ei[0], ei[1], value, (n, n))


#: MMRec's ``mm_image_weight``: weight of the image (visual) modality in the item-item graph
MMREC_IMAGE_WEIGHT = 0.1
#: modality names read as MMRec's visual feature (``v_feat``, ``image_feat.npy``)
IMAGE_MODALITIES = ("image", "visual", "v")


def item_graph_weights(modalities: Sequence[str], mm_weights: Optional[Sequence[float]] = None,
                       image_weight: float = MMREC_IMAGE_WEIGHT) -> List[float]:
    r"""Weights :math:`w_m` of the frozen item-item graph :math:`S = \sum_m w_m S^m`, summing to 1.

    ``mm_weights`` (one non-negative number per modality) are renormalised. Without them the
    weights follow MMRec's FREEDOM (``mm_image_weight = 0.1``: :math:`0.1\,S^{v} + 0.9\,S^{t}`):
    an ``image`` modality gets ``image_weight`` and the other modalities share the rest equally;
    a dataset without an image modality gets equal weights.
    """
    modalities = list(modalities)
    if mm_weights is None:
        img = [m for m in modalities if m.lower() in IMAGE_MODALITIES]
        if len(img) != 1 or len(modalities) < 2:
            return [1.0 / len(modalities)] * len(modalities)
        rest = (1.0 - image_weight) / (len(modalities) - 1)
        return [image_weight if m == img[0] else rest for m in modalities]
    mm_weights = [float(w) for w in mm_weights]
    if len(mm_weights) != len(modalities) or min(mm_weights) < 0 or sum(mm_weights) <= 0:
        raise ValueError(f"mm_weights must be {len(modalities)} non-negative numbers "
                         f"(one per modality {modalities}), got {mm_weights}")
    total = sum(mm_weights)
    return [w / total for w in mm_weights]


def modality_item_graph(features: Mapping[str, Tensor], weights: Sequence[float], k: int) -> Tensor:
    r"""FREEDOM's frozen item-item graph :math:`S = \sum_m w_m S^m` (Eq. 1-4) of the raw
    features ``{m: [I, d_m]}`` (in the order of ``weights``), ``[I, I]`` ``torch.sparse_csr``."""
    mm = None
    for w, x in zip(weights, features.values()):
        s = knn_normalized_adjacency(x, k).to_sparse_coo() * w
        mm = s if mm is None else mm + s
    return mm.coalesce().to_sparse_csr()
