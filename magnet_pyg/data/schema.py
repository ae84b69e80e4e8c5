r"""How a recommendation dataset is laid out inside a PyG :class:`HeteroData`.

Every loader and generator in :mod:`magnet_pyg.data` returns this shape, and every
other part of the package reads it through the helpers below:

* node types ``"user"`` and ``"item"`` with ``num_nodes`` set;
* the item features as PyG's usual ``data["item"].x`` (so ``data.x_dict`` works): one
  ``[num_items, sum_m d_m]`` matrix, the content modalities side by side in the order of
  ``data.modalities`` (for example ``["image", "text"]``), their widths in
  ``data.modality_dims`` (for example ``[4096, 384]``). The features are held once: modality
  ``m`` is the column block ``x[:, a_m:a_m + d_m]``, which :func:`modality_features` returns as
  a view (no copy; with one modality, ``x`` itself). As ``x`` is one tensor, ``data.to(...)``,
  ``data.clone()`` and PyG's loaders move or copy the features once. Write them only with
  :func:`set_modalities` / :func:`set_modality` / :func:`set_item_features`. Users have no
  features (no ``data["user"].x``, as in PyG's LightGCN-style data; ``data.x_dict`` is then
  ``{"item": x}``); a dataset without content modalities has no ``x`` at all, and
  ``data.x_dict`` raises PyG's ``KeyError`` as for any featureless graph. (Data written with
  one ``data["item"]["x_<name>"]`` matrix per modality and no ``modality_dims`` is still read
  by :func:`modality_features`.)
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
    """``{name: [num_items, d_name] tensor}`` for every content modality, in order: column
    views of ``data["item"].x`` (no copy)."""
    names = modality_names(data)
    if not names:
        return {}
    store = data[ITEM]
    dims = getattr(data, "modality_dims", None)
    if dims is None and all(f"x_{n}" in store for n in names):  # one matrix per modality
        return {n: store[f"x_{n}"] for n in names}
    if dims is None or len(dims) != len(names):
        raise ValueError(f"data.modalities is {names} but data.modality_dims is {dims}: write "
                         f"the item features with magnet_pyg.data.set_modalities")
    if "x" not in store:
        raise ValueError(f"data.modalities is {names} but data['item'] has no x: write the item "
                         f"features with magnet_pyg.data.set_modalities")
    x = store.x
    if x.dim() != 2 or x.size(1) != sum(dims):
        raise ValueError(f"data['item'].x has shape {tuple(x.shape)} but the modalities {names} "
                         f"have widths {list(dims)} (sum {sum(dims)}): write the item features "
                         f"with magnet_pyg.data.set_modalities")
    if len(names) == 1:
        return {names[0]: x}
    out, start = {}, 0
    for n, d in zip(names, dims):
        out[n] = x[:, start:start + int(d)]
        start += int(d)
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
    for attr in ("modality_dims",):
        if attr in data:
            delattr(data, attr)
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
    data.modality_dims = list(dims.values())


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
