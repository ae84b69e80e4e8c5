r"""Rebuild a trained run (model, data, graph) of any model from its run folder, and serve
recommendations or export embeddings from it.

A run folder (``magnet-pyg train ... --out DIR``, or :class:`~magnet_pyg.train.Trainer` with
the ``extra_config`` of :meth:`magnet_pyg.config.RunConfig.record`) holds ``results.json`` and
``best.pt``. The recorded configuration is read back (:meth:`~magnet_pyg.config.RunConfig.from_record`,
both recorded layouts), the data is re-loaded (checked against the recorded ``dataset_stats``),
the model and the induced edges of a dual-view run are rebuilt exactly as for training
(:func:`~magnet_pyg.config.build_run`, the edges possibly read from the graph cache), and the
selected checkpoint is loaded.

Raw IDs: when the run's data folder holds the ID maps ``u_id_mapping.csv`` and
``i_id_mapping.csv`` (written by :func:`~magnet_pyg.data.prepare_dataset`, and shipped with
MMRec's own folders), :meth:`RunContext.recommend` takes raw user IDs and returns raw item
IDs; ``internal_ids=True`` keeps the dataset's indices.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
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


def _load_data(run: Any, cfg: Dict[str, Any]) -> Any:
    """The run's dataset, checked against its recorded counts. A record of the earlier layout
    did not record whether cold-start rows were kept: both are tried."""
    recorded = cfg.get("dataset_stats")
    keeps = (run.data.keep_cold_start,) if "config_version" in cfg else (False, True)
    for keep in keeps:
        data = replace(run.data, keep_cold_start=keep).load()
        if _stats_match(data, recorded):
            return data
    raise ValueError(f"re-loading '{run.data.name}' does not reproduce the run's dataset "
                     f"(recorded {recorded}); has the data changed?")


def build_magnet(data: Any, options: Dict[str, Any]) -> Any:
    """A fresh :class:`~magnet_pyg.models.MAGNET` for ``data`` from recorded ``model_options``
    (see :func:`build_model`)."""
    return build_model("magnet", data, options)


def load_run(run_dir: Union[str, Path], checkpoint: str = "best.pt", device: str = "cpu",
             graph_cache: Optional[str] = ".cache/graph") -> RunContext:
    """Rebuild ``(model, data, graph)`` of a run folder of any model (module docstring).

    Args:
        run_dir: the ``--out`` folder of the run.
        checkpoint: ``best.pt`` (the selected checkpoint, default) or ``last.pt``.
        device: where to put the model.
        graph_cache: folder of the induced-edge cache (dual-view runs; ``None`` disables it).
    """
    from ..config import RunConfig, build_run
    run_dir = Path(run_dir)
    res_path = run_dir / "results.json"
    if not res_path.exists():
        raise FileNotFoundError(f"{res_path} not found: is '{run_dir}' a run folder (a trainer's out_dir)?")
    results = json.loads(res_path.read_text())
    cfg = results.get("config", {})
    if cfg.get("data") is None:
        raise ValueError("results.json has no config.data: cannot re-load the run's dataset")
    run = RunConfig.from_record(cfg, model=results.get("model"))
    data = _load_data(run, cfg)
    model, data, _ = build_run(run, data, graph_cache=graph_cache, progress=False)
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


def build_model(name: str, data: Any, options: Union[Dict[str, Any], Any]) -> Any:
    """A fresh model ``name`` (a name of :data:`magnet_pyg.models.MODELS`) for ``data`` from the
    recorded ``model_options`` of its run: a configuration instance, or a mapping of either
    recorded layout (the earlier one, with ``dim``, ``layers``, ``preset`` and ``modalities``,
    is translated; options it did not record take their defaults)."""
    from ..config import RunConfig
    from ..data import modality_features, num_items, num_users
    from ..models.registry import model_entry, model_from_config
    entry = model_entry(name)
    if isinstance(options, entry.config):
        config, names = options, None
    else:
        options = dict(options)
        names = options.get("modalities")
        config = RunConfig.from_record({"model_options": options, "data": "-"}, model=name).model_options
    dims = None
    if entry.multimodal:
        feats = modality_features(data)
        names = names or list(feats)
        missing = [m for m in names if m not in feats]
        if missing:
            raise ValueError(f"the data has no features for the run's modalities {missing}")
        dims = {m: int(feats[m].size(1)) for m in names}
    return model_from_config(name, config, num_users(data), num_items(data), dims)
