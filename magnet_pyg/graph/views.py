r"""The two structural views of MAGNET (section 3.2.2) inside one :class:`HeteroData`.

* :math:`\mathcal G_{UI} = (\mathcal U \cup \mathcal I, \mathcal E)`: the training edges
  :data:`~magnet_pyg.data.RATES` / :data:`~magnet_pyg.data.RATED_BY`;
* :math:`\mathcal G_{UIG} = (\mathcal U \cup \mathcal I, \mathcal E \cup \mathcal E^+)`:
  the same plus the content-induced edges :data:`~magnet_pyg.data.INDUCED` /
  :data:`~magnet_pyg.data.INDUCED_BY` added by :func:`add_induced_edges` (Eq. 1-3),
  with ``edge_weight`` = candidate score :math:`c_{u,j}`.

Single-view (MAGNET-SV) is the dataset without induced edges, where both views coincide.
:func:`view_edge_index` gives a view as a homogeneous ``edge_index`` (for ``LGConv`` /
normalised adjacencies) and :func:`view_data` as a ``HeteroData`` holding only the
view's edge types (for ``NeighborLoader``).
"""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.schema import (INDUCED, INDUCED_BY, RATED_BY, RATES, modality_names, num_items,
                           num_users, split_edge_index)
from .cache import cache_file, digest, load_cached, save_atomic
from .expansion import check_r, expand_candidates, item_similarity
from .knn import (EXACT_LIMIT, ANNParams, check_k, checked_modalities, knn_cache_key, knn_graphs,
                  resolve_backend_for)

log = logging.getLogger(__name__)

VIEWS = ("ui", "uig")

__all__ = ["VIEWS", "add_induced_edges", "induced_edges", "view_edge_index", "view_data"]


def induced_edges(data: HeteroData, k: int, r: int, backend: str = "auto",
                  cache_dir: Optional[Union[str, Path]] = None,
                  ann: Optional[ANNParams] = None, modalities: Optional[Sequence[str]] = None,
                  recall_sample: int = 2000, chunk_entries: int = 1 << 22, device=None,
                  progress: bool = True, exact_limit: float = EXACT_LIMIT) -> Dict[str, Any]:
    r"""Compute (or load from the cache) :math:`\mathcal E^+` of ``data`` (Eq. 1-3).

    Only the training edges (:data:`~magnet_pyg.data.RATES`) and the item features are
    read: validation and test edges cannot leak into :math:`\mathcal E^+`.

    Args:
        data: a dataset in the layout of :mod:`magnet_pyg.data.schema`.
        k: kNN neighbours per item and modality (Eq. 1), ``1 <= k < I``.
        r: candidates per user (Eq. 2), ``1 <= r < I``.
        backend, ann, device, exact_limit: kNN search (:func:`~magnet_pyg.graph.knn.knn_search`).
        cache_dir: cache folder (``None``: no caching). The kNN lists and
            :math:`\mathcal E^+` are cached under digests of features, training edges,
            ``k``, ``r``, the concrete backend and its settings.
        modalities: the modalities used (default: all, in ``data.modalities`` order);
            :math:`S` is their mean (``(S^A + S^S)/2`` for two).
        recall_sample: items on which approximate kNN recall is measured (``0``: never).
        chunk_entries: memory bound of the expansion (:func:`expand_candidates`).

    Returns:
        ``{"edge_index": [2, E+] (user, item), "edge_weight": [E+] float32, "info": dict}``
        with ``info`` holding ``k``, ``r``, ``modalities``, ``backend`` and ``recall`` per
        modality, ``num_edges``, ``cache_hit`` and ``seconds`` per stage.
    """
    n_u, n_i = num_users(data), num_items(data)
    names = list(modalities) if modalities is not None else modality_names(data)
    for name in names:
        check_k(k, n_i, name)
    check_r(r, n_i)
    checked = checked_modalities(data, names)          # validated once (errors name the modality)
    names = list(checked)
    feats = {m: xn[0] for m, xn in checked.items()}
    train = split_edge_index(data, "train")
    backends = {m: resolve_backend_for(x, backend, exact_limit) for m, x in feats.items()}
    seconds: Dict[str, float] = {}
    path = None
    if cache_dir is not None:
        t = time.perf_counter()
        keys = [knn_cache_key(feats[m], k, backends[m], ann, device) for m in names]
        key = digest("induced", train, n_u, n_i, names, keys, int(r))
        path = cache_file(cache_dir, "induced", key)
        seconds["digest"] = time.perf_counter() - t
        hit = load_cached(path)
        if hit is not None:
            info = dict(hit["info"], cache_hit=True)
            return {"edge_index": hit["edge_index"], "edge_weight": hit["edge_weight"], "info": info}

    t = time.perf_counter()
    knn = knn_graphs(checked, k, backend, ann, cache_dir, recall_sample, device, progress,
                     exact_limit)
    seconds["knn"] = time.perf_counter() - t
    t = time.perf_counter()
    sim = item_similarity([g.to_sparse() for g in knn.values()], n_i)
    seconds["similarity"] = time.perf_counter() - t
    t = time.perf_counter()
    edge_index, weight = expand_candidates(train, sim, n_u, r, chunk_entries, progress)
    seconds["expansion"] = time.perf_counter() - t
    info = {"k": int(k), "r": int(r), "modalities": names,
            "backend": {m: g.backend for m, g in knn.items()},
            "recall": {m: g.recall for m, g in knn.items()},
            "num_edges": int(edge_index.size(1)), "cache_hit": False, "seconds": seconds}
    if path is not None:
        save_atomic({"edge_index": edge_index, "edge_weight": weight, "info": info}, path)
    return {"edge_index": edge_index, "edge_weight": weight, "info": info}


def add_induced_edges(data: HeteroData, k: int, r: int, backend: str = "auto",
                      cache_dir: Optional[Union[str, Path]] = None,
                      ann: Optional[ANNParams] = None,
                      modalities: Optional[Sequence[str]] = None, recall_sample: int = 2000,
                      chunk_entries: int = 1 << 22, device=None, progress: bool = True,
                      exact_limit: float = EXACT_LIMIT) -> HeteroData:
    r"""Return a **shallow copy** of ``data`` with the content-induced edges
    :math:`\mathcal E^+` (Eq. 1-3) as :data:`~magnet_pyg.data.INDUCED`
    ``('user', 'induced', 'item')`` and its reverse :data:`~magnet_pyg.data.INDUCED_BY`,
    both with ``edge_weight`` = :math:`c_{u,j}` (``float32``); ``data`` itself is not
    modified and tensors are shared. Existing induced edges are replaced. The copy's
    ``induced_info`` holds the settings, per-modality backend and kNN recall, edge count
    and timings. Arguments: see :func:`induced_edges`.
    """
    res = induced_edges(data, k, r, backend, cache_dir, ann, modalities, recall_sample,
                        chunk_entries, device, progress, exact_limit)
    out = copy.copy(data)
    ei, w = res["edge_index"], res["edge_weight"]
    out[INDUCED].edge_index = ei
    out[INDUCED].edge_weight = w
    out[INDUCED_BY].edge_index = ei.flip(0)
    out[INDUCED_BY].edge_weight = w
    out.induced_info = res["info"]
    info = res["info"]
    log.info("added %d induced edges (k=%d, r=%d, kNN %s, recall %s%s)", info["num_edges"], k, r,
             info["backend"], info["recall"], ", from cache" if info["cache_hit"] else "")
    return out


def _check_view(view: str) -> None:
    if view not in VIEWS:
        raise ValueError(f"unknown view '{view}', expected one of {VIEWS}")


def view_edge_index(data: HeteroData, view: str) -> Tensor:
    r"""A view as a homogeneous ``[2, E]`` ``edge_index`` with both directions.

    Users are nodes ``0..U-1`` and items ``U..U+I-1``. The first half of the columns are
    user -> item edges (training pairs, then for ``"uig"`` the induced pairs), the second
    half the same pairs reversed. ``"uig"`` on a dataset without induced edges
    (single-view) equals ``"ui"``.

    Args:
        data: a dataset in the layout of :mod:`magnet_pyg.data.schema`.
        view: ``"ui"`` (:math:`\mathcal G_{UI}`) or ``"uig"`` (:math:`\mathcal G_{UIG}`).
    """
    _check_view(view)
    pairs = [data[RATES].edge_index]
    if view == "uig" and INDUCED in data.edge_types:
        pairs.append(data[INDUCED].edge_index)
    ui = torch.cat(pairs, dim=1).long()
    u, i = ui[0], ui[1] + num_users(data)
    return torch.stack([torch.cat([u, i]), torch.cat([i, u])])


def view_data(data: HeteroData, view: str) -> HeteroData:
    r"""``data`` restricted to the edge types of a view (node stores and features kept),
    e.g. for :class:`torch_geometric.loader.NeighborLoader`: ``"ui"`` keeps
    :data:`~magnet_pyg.data.RATES` / :data:`~magnet_pyg.data.RATED_BY`, ``"uig"`` also
    :data:`~magnet_pyg.data.INDUCED` / :data:`~magnet_pyg.data.INDUCED_BY` when present."""
    _check_view(view)
    types: List = [RATES, RATED_BY]
    if view == "uig":
        types += [t for t in (INDUCED, INDUCED_BY) if t in data.edge_types]
    return data.edge_type_subgraph(types)
