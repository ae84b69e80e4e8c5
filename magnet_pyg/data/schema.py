r"""How a recommendation dataset is laid out inside a PyG :class:`HeteroData`.

Every loader and generator in :mod:`magnet_pyg.data` returns this shape, and every
other part of the package reads it through the helpers below:

* node types ``"user"`` and ``"item"`` with ``num_nodes`` set;
* the item features as PyG's usual ``data["item"].x`` (so ``data.x_dict`` works): one
  ``[num_items, sum_m d_m]`` matrix, the content modalities side by side, its column layout
  in ``data.modality_dims`` (``{name: d_name}`` in column order, for example
  ``{"image": 4096, "text": 384}``); ``data.modalities`` lists the modalities in use (by
  default all of them, in column order). The features are held once: modality ``m`` is the
  column block of ``x`` that :func:`modality_features` returns as a view (no copy; with one
  modality, ``x`` itself). As ``x`` is one tensor, ``data.to(...)``, ``data.clone()`` and
  PyG's loaders move or copy the features once. Write them only with
  :func:`set_modalities` / :func:`set_modality` / :func:`set_item_features`. Users have no
  features (no ``data["user"].x``, as in PyG's LightGCN-style data; ``data.x_dict`` is then
  ``{"item": x}``); a dataset without content modalities has no ``x`` at all, and
  ``data.x_dict`` raises PyG's ``KeyError`` as for any featureless graph. (Data written with
  one ``data["item"]["x_<name>"]`` matrix per modality is still read by
  :func:`modality_features`.)
* the training interactions as the edge type :data:`RATES` ``('user', 'rates', 'item')``
  plus its reverse :data:`RATED_BY` (``edge_index`` rows: source, destination);
* the validation and test interactions, never part of the message-passing graph, as
  global attributes ``data.valid_edge_index`` and ``data.test_edge_index``
  (shape ``[2, n]``, row 0 users, row 1 items; read them with :func:`split_edge_index`).
  :func:`~magnet_pyg.data.split_graph` turns one split into PyG's link-prediction layout,
  ``edge_label_index`` / ``edge_label`` on :data:`RATES` (see :mod:`.link_split`);
* content-induced edges (MAGNET's :math:`\mathcal{E}^+`, added by
  :mod:`magnet_pyg.graph`) as :data:`INDUCED` ``('user', 'induced', 'item')`` with
  ``edge_weight`` = candidate score, plus its reverse :data:`INDUCED_BY`.
"""
from __future__ import annotations

from typing import Dict, List, Mapping

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

USER = "user"
ITEM = "item"
RATES = (USER, "rates", ITEM)
RATED_BY = (ITEM, "rated_by", USER)
INDUCED = (USER, "induced", ITEM)
INDUCED_BY = (ITEM, "induced_by", USER)
SPLITS = ("train", "valid", "test")


def num_users(data: HeteroData) -> int:
    return int(data[USER].num_nodes)


def num_items(data: HeteroData) -> int:
    return int(data[ITEM].num_nodes)


def modality_names(data: HeteroData) -> List[str]:
    """Ordered content-modality names of ``data`` (may be empty)."""
    return list(getattr(data, "modalities", None) or [])


def modality_features(data: HeteroData) -> Dict[str, Tensor]:
    """``{name: [num_items, d_name] tensor}`` for every content modality of
    ``data.modalities``, in that order: column views of ``data["item"].x`` (no copy)."""
    names = modality_names(data)
    if not names:
        return {}
    store = data[ITEM]
    layout = dict(getattr(data, "modality_dims", None) or {})
    offsets, start = {}, 0
    for name, d in layout.items():
        offsets[name] = (start, start + int(d))
        start += int(d)
    if layout:
        if "x" not in store:
            raise ValueError(f"data.modality_dims is {layout} but data['item'] has no x: write the "
                             f"item features with magnet_pyg.data.set_modalities")
        x = store.x
        if x.dim() != 2 or x.size(1) != start:
            raise ValueError(f"data['item'].x has shape {tuple(x.shape)} but data.modality_dims "
                             f"{layout} sums to {start} columns: write the item features with "
                             f"magnet_pyg.data.set_modalities")
    out = {}
    for name in names:
        if name in offsets:
            a, b = offsets[name]
            out[name] = store.x if (a, b) == (0, store.x.size(1)) else store.x[:, a:b]
        elif f"x_{name}" in store:  # one matrix per modality
            out[name] = store[f"x_{name}"]
        else:
            raise ValueError(f"modality '{name}' of data.modalities has no features: "
                             f"data['item'].x holds {layout or 'nothing'}")
    return out


def _check_modality(data: HeteroData, name: str, x: Tensor) -> None:
    if x.dim() != 2 or x.size(0) != num_items(data):
        raise ValueError(
            f"modality '{name}': expected a [{num_items(data)}, d] matrix, got shape {tuple(x.shape)}")
    if x.size(1) == 0:
        raise ValueError(f"modality '{name}': the feature matrix has zero columns (shape "
                         f"{tuple(x.shape)}); a modality with zero columns is an error for every model")


def _drop_item_features(data: HeteroData) -> None:
    store = data[ITEM]
    for name in modality_names(data):
        if f"x_{name}" in store:
            del store[f"x_{name}"]
    if "x" in store:
        del store.x
    if "modality_dims" in data:
        del data.modality_dims
    data.modalities = []


def set_item_features(data: HeteroData, x: Tensor, dims: Mapping[str, int]) -> None:
    r"""Store ``x`` as ``data["item"].x``, made of the modalities ``dims`` side by side.

    Args:
        x: ``[num_items, sum(dims.values())]`` item features, stored as given (no copy).
        dims: ``{name: d_name}`` in column order: modality ``name`` is the column block
            ``x[:, a:a + d_name]``.

    The previous item features of ``data`` (all its modalities) are replaced.
    """
    dims = {str(k): int(v) for k, v in dims.items()}
    if not dims:
        raise ValueError("set_item_features needs at least one modality")
    for name, d in dims.items():
        if d < 1:
            raise ValueError(f"modality '{name}': the feature matrix has zero columns (width {d}); "
                             f"a modality with zero columns is an error for every model")
    if x.dim() != 2 or x.size(0) != num_items(data) or x.size(1) != sum(dims.values()):
        raise ValueError(f"item features: expected a [{num_items(data)}, {sum(dims.values())}] "
                         f"matrix (modalities {dims}), got shape {tuple(x.shape)}")
    _drop_item_features(data)
    data[ITEM].x = x
    data.modalities = list(dims)
    data.modality_dims = dims


def set_modalities(data: HeteroData, features: Mapping[str, Tensor]) -> None:
    r"""Replace all content modalities of ``data`` by ``features`` (``{name: [I, d_name]}``, in
    order): their concatenation becomes ``data["item"].x`` (one modality is stored as given,
    without a copy). All matrices must share one dtype and device; an empty mapping removes
    the item features."""
    features = {str(k): v for k, v in features.items()}
    for name, x in features.items():
        _check_modality(data, name, x)
    if not features:
        _drop_item_features(data)
        return
    first_name, first = next(iter(features.items()))
    for name, x in features.items():
        if x.dtype != first.dtype or x.device != first.device:
            raise ValueError(
                f"modality '{name}' is {x.dtype} on {x.device} but modality '{first_name}' is "
                f"{first.dtype} on {first.device}: the modalities share one item feature matrix "
                f"data['item'].x, so they need one dtype and device (convert with .to(...))")
    x = first if len(features) == 1 else torch.cat(list(features.values()), dim=1)
    set_item_features(data, x, {name: int(v.size(1)) for name, v in features.items()})


def set_modality(data: HeteroData, name: str, x: Tensor) -> None:
    """Add (or replace) the item feature matrix of modality ``name`` (``data["item"].x`` is
    rebuilt, see :func:`set_modalities`)."""
    _check_modality(data, name, x)
    features = modality_features(data)
    features[name] = x
    set_modalities(data, features)


def split_edge_index(data: HeteroData, split: str) -> Tensor:
    """``[2, n]`` (user, item) pairs of ``split`` in ``{'train', 'valid', 'test'}``."""
    if split == "train":
        return data[RATES].edge_index
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}', expected one of {SPLITS}")
    return getattr(data, f"{split}_edge_index")


def set_split_edges(data: HeteroData, train: Tensor, valid: Tensor, test: Tensor) -> HeteroData:
    """Store the three splits (each ``[2, n]`` user/item pairs) on ``data``."""
    data[RATES].edge_index = train
    data[RATED_BY].edge_index = train.flip(0)
    data.valid_edge_index = valid
    data.test_edge_index = test
    return data


def has_induced_edges(data: HeteroData) -> bool:
    return INDUCED in data.edge_types and data[INDUCED].num_edges > 0


def user_item_csr(edge_index: Tensor, num_users: int, num_items: int) -> Tensor:
    """Binary ``[num_users, num_items]`` CSR matrix (``torch.sparse_csr``) of the pairs."""
    values = torch.ones(edge_index.size(1), dtype=torch.float32)
    coo = torch.sparse_coo_tensor(edge_index, values, (num_users, num_items)).coalesce()
    return coo.to_sparse_csr()
