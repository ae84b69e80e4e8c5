r"""Rebuild a trained run (model, data, graph) of any model from its run folder, and serve
recommendations or export embeddings from it.

A run folder (``magnet-pyg train --model magnet --out DIR``, or :class:`~magnet_pyg.train.Trainer`
with the same ``extra_config``) holds ``results.json`` and ``best.pt``. The data is re-loaded
from ``config.data`` / ``data_seed`` / ``resplit_seed`` (checked against the recorded
``dataset_stats``), the model is re-created from ``config.model_options`` exactly as the CLI
builds it, the induced edges of a dual-view run are rebuilt (or read from the graph cache) with
the recorded ``knn_k`` / ``expand_r``, and the selected checkpoint is loaded.

Raw IDs: when the run's data folder holds the ID maps ``u_id_mapping.csv`` and
``i_id_mapping.csv`` (written by :func:`~magnet_pyg.data.prepare_dataset`, and shipped with
MMRec's own folders), :meth:`RunContext.recommend` takes raw user IDs and returns raw item
IDs; ``internal_ids=True`` keeps the dataset's indices.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

__all__ = ["RunContext", "build_model", "load_run"]


@dataclass
class RunContext:
    """A trained model with its data, graph and ``results.json`` (``run_dir`` may be ``None``
    for an in-memory run). ``state`` (``model.inference(graph)``) is computed on first use."""

    model: Any
    data: Any
    graph: Any
    results: Dict[str, Any]
    run_dir: Optional[Path] = None
    _state: Any = field(default=None, repr=False)
    _id_maps: Any = field(default=False, repr=False)

    @property
    def state(self) -> Any:
        if self._state is None:
            was = self.model.training
            self.model.eval()
            self._state = self.model.inference(self.graph)
            self.model.train(was)
        return self._state

    @property
    def config(self) -> Dict[str, Any]:
        return self.results.get("config", {})

    @property
    def model_options(self) -> Dict[str, Any]:
        return self.config.get("model_options", {})

    @property
    def data_dir(self) -> Optional[Path]:
        """The dataset folder of the run (``None`` for synthetic or in-memory data)."""
        from ..data import resolve_dataset_path
        name = self.config.get("data")
        if not name or str(name) == "synthetic" or str(name).startswith("synthetic-"):
            return None
        try:
            return resolve_dataset_path(name)
        except FileNotFoundError:
            return None

    @property
    def id_maps(self):
        """``{"user": IdMap, "item": IdMap}`` read from the data folder's
        ``u_id_mapping.csv`` / ``i_id_mapping.csv``, or ``None`` when it has none."""
        if self._id_maps is False:
            from ..data import num_items, num_users, read_id_maps
            folder = self.data_dir
            self._id_maps = None if folder is None else \
                read_id_maps(folder, num_users(self.data), num_items(self.data))
        return self._id_maps

    def score_fn(self):
        """``users -> [B, I]`` full-ranking scores (evaluation mode)."""
        model, state = self.model, self.state
        device = next(model.parameters()).device

        def fn(users: torch.Tensor) -> torch.Tensor:
            was = model.training
            model.eval()
            try:
                with torch.no_grad():
                    return model.score(state, users.to(device))
            finally:
                model.train(was)
        return fn

    def recommend(self, users, k: int = 20, exclude_seen: bool = True, internal_ids: bool = False):
        """Top-``k`` items of each user: ``(items [B, k], scores [B, k])``, best first.

        Args:
            users: raw user IDs when the run's data has ID maps (:attr:`id_maps`) and
                ``internal_ids`` is off (compared as text); otherwise user indices (an int, a
                list or a ``[B]`` tensor).
            k: list length (at most the number of items).
            exclude_seen: leave out the user's training items (as the evaluator does).
            internal_ids: use the dataset's user and item indices even when ID maps exist.

        Returns:
            ``items``: raw item IDs (a ``str`` array) with ID maps, else an index tensor;
            ``scores``: a tensor.
        """
        from ..data import num_items, num_users, split_edge_index
        from ..evaluate.ranking import CSRIndex, masked_scores
        maps = None if internal_ids else self.id_maps
        if maps is not None:
            raw = [users] if isinstance(users, (str, int)) else list(users)
            users = maps["user"].to_index(raw)
        users = torch.as_tensor(users, dtype=torch.long).view(-1)
        U, I = num_users(self.data), num_items(self.data)
        bad = users[(users < 0) | (users >= U)]
        if bad.numel():
            raise ValueError(f"user {int(bad[0])} is not in the run's dataset (users 0..{U - 1})")
        if not 1 <= k <= I:
            raise ValueError(f"k must be in 1..{I}, got {k}")
        exclude = [CSRIndex(split_edge_index(self.data, "train"), U)] if exclude_seen else []
        scores = masked_scores(self.score_fn(), users, exclude)
        top = scores.topk(k, dim=1)
        items = top.indices.cpu()
        if maps is not None:
            return maps["item"].to_raw(items.numpy()), top.values.cpu()
        return items, top.values.cpu()

    def embeddings(self) -> Dict[str, torch.Tensor]:
        """The arrays a run exports: ``user`` ``[U, d]`` and ``item`` ``[I, d]`` embeddings whose
        inner product is the model's score (for MAGNET, the fused behaviour embeddings of
        Eq. 6, plus its cues ``user_cues`` ``[U, M, d]`` and ``item_cues`` ``[I, M, d]``)."""
        state = self.state
        if hasattr(state, "h_u"):  # MAGNET
            zu, zi = self.model.encoder.split(state.z)
            return {"user": zu, "item": zi, "user_cues": state.h_u, "item_cues": state.h_i}
        if isinstance(state, (tuple, list)) and len(state) == 2 and all(torch.is_tensor(t) for t in state):
            return {"user": state[0], "item": state[1]}
        raise ValueError(f"model '{self.results.get('model')}' has no embedding export")


def _stats_match(data: Any, recorded: Optional[Dict[str, Any]]) -> bool:
    if not recorded:
        return True
    from ..data import describe
    now = describe(data)
    return all(now.get(k) == recorded.get(k)
               for k in ("users", "items", "train_edges", "valid_edges", "test_edges"))


def _load_data(cfg: Dict[str, Any]) -> Any:
    from ..data import load_dataset, resplit
    name = cfg.get("data")
    if name is None:
        raise ValueError("results.json has no config.data: cannot re-load the run's dataset")
    recorded = cfg.get("dataset_stats")
    for drop in (True, False):
        data = load_dataset(name, seed=int(cfg.get("data_seed") or 0), drop_cold_start=drop)
        if cfg.get("resplit_seed") is not None:
            data = resplit(data, int(cfg["resplit_seed"]))
        if _stats_match(data, recorded):
            return data
    raise ValueError(f"re-loading '{name}' does not reproduce the run's dataset "
                     f"(recorded {recorded}); has the data changed?")


def build_magnet(data: Any, options: Dict[str, Any]) -> Any:
    """A fresh :class:`~magnet_pyg.models.MAGNET` for ``data`` from recorded ``model_options``
    (keys that are not constructor arguments, like ``preset`` or ``knn_k``, are ignored)."""
    from ..data import modality_features, num_items, num_users
    from ..models.magnet import MAGNET
    feats = modality_features(data)
    names = options.get("modalities") or list(feats)
    missing = [m for m in names if m not in feats]
    if missing:
        raise ValueError(f"the data has no features for the run's modalities {missing}")
    dims = {m: int(feats[m].size(1)) for m in names}
    params = inspect.signature(MAGNET.__init__).parameters
    kwargs = {k: v for k, v in options.items() if k in params and k not in
              ("self", "num_users", "num_items", "modality_dims")}
    return MAGNET(num_users(data), num_items(data), dims, **kwargs)


def load_run(run_dir: Union[str, Path], checkpoint: str = "best.pt", device: str = "cpu",
             graph_cache: Optional[str] = ".cache/graph") -> RunContext:
    """Rebuild ``(model, data, graph)`` of a run folder of any model (module docstring).

    Args:
        run_dir: the ``--out`` folder of the run.
        checkpoint: ``best.pt`` (the selected checkpoint, default) or ``last.pt``.
        device: where to put the model.
        graph_cache: folder of the induced-edge cache (dual-view runs; ``None`` disables it).
    """
    run_dir = Path(run_dir)
    res_path = run_dir / "results.json"
    if not res_path.exists():
        raise FileNotFoundError(f"{res_path} not found: is '{run_dir}' a run folder (a trainer's out_dir)?")
    results = json.loads(res_path.read_text())
    name = results.get("model")
    cfg = results.get("config", {})
    opts = dict(cfg.get("model_options") or {})
    data = _load_data(cfg)
    model = build_model(name, data, opts)
    if name == "magnet" and opts.get("view", "dual") == "dual":
        from ..graph import add_induced_edges
        from ..models.magnet import PRESETS
        pre = PRESETS.get(opts.get("preset") or "default", PRESETS["default"])
        data = add_induced_edges(data, k=int(opts.get("knn_k") or pre.k),
                                 r=int(opts.get("expand_r") or pre.r), cache_dir=graph_cache)
    ck_path = run_dir / checkpoint
    if not ck_path.exists():
        raise FileNotFoundError(f"{ck_path} not found")
    from ..train.checkpoint import load_checkpoint
    state = load_checkpoint(ck_path, map_location=device)
    model.load_state_dict(state["model"])
    model.to(device)
    model.eval()
    graph = model.prepare(data)
    return RunContext(model, data, graph, results, run_dir)


def build_model(name: str, data: Any, options: Dict[str, Any]) -> Any:
    """A fresh model ``name`` (as ``magnet-pyg train --model``) for ``data`` from the recorded
    ``model_options`` of its run."""
    from ..data import modality_features, num_items, num_users
    from .. import models
    U, I = num_users(data), num_items(data)
    if name == "magnet":
        return build_magnet(data, options)
    if name == "bpr":
        return models.BPRMF(U, I, int(options.get("dim", 64)), float(options.get("reg_weight", 1e-4)))
    if name == "lightgcn":
        return models.LightGCN(U, I, int(options.get("dim", 64)), int(options.get("layers", 2)),
                               float(options.get("reg_weight", 1e-4)))
    peers = {"freedom": models.FREEDOM, "anchorrec": models.AnchorRec, "crane": models.CRANE,
             "recgoat": models.RecGOAT}
    if name not in peers:
        raise ValueError(f"unknown model '{name}' in the run's results.json")
    cls = peers[name]
    feats = modality_features(data)
    names = options.get("modalities") or list(feats)
    dims = {m: int(feats[m].size(1)) for m in names}
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in options.items() if k in params and k not in
              ("self", "num_users", "num_items", "in_channels", "modality_dims", "embedding_dim")}
    return cls(U, I, dims, embedding_dim=int(options.get("dim", 64)), **kwargs)
