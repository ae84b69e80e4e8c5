r"""Rebuild a trained MAGNET run (model, data, graph) from its run folder.

A run folder (``magnet-pyg train --model magnet --out DIR``, or :class:`~magnet_pyg.train.Trainer`
with the same ``extra_config``) holds ``results.json`` and ``best.pt``. The data is re-loaded
from ``config.data`` / ``data_seed`` / ``resplit_seed`` (checked against the recorded
``dataset_stats``), the model is re-created from ``config.model_options`` exactly as the CLI
builds it, the induced edges of a dual-view run are rebuilt (or read from the graph cache) with
the recorded ``knn_k`` / ``expand_r``, and the selected checkpoint is loaded.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

__all__ = ["RunContext", "load_run"]


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

    def score_fn(self):
        """``users -> [B, I]`` full-ranking scores (evaluation mode)."""
        model, state = self.model, self.state

        def fn(users: torch.Tensor) -> torch.Tensor:
            was = model.training
            model.eval()
            try:
                with torch.no_grad():
                    return model.score(state, users.to(state.z.device))
            finally:
                model.train(was)
        return fn


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
    """Rebuild ``(model, data, graph)`` of a MAGNET run folder (module docstring).

    Args:
        run_dir: the ``--out`` folder of the run.
        checkpoint: ``best.pt`` (the selected checkpoint, default) or ``last.pt``.
        device: where to put the model.
        graph_cache: folder of the induced-edge cache (dual-view runs; ``None`` disables it).
    """
    run_dir = Path(run_dir)
    res_path = run_dir / "results.json"
    if not res_path.exists():
        raise FileNotFoundError(f"{res_path} not found: is '{run_dir}' a run folder (--out)?")
    results = json.loads(res_path.read_text())
    if results.get("model") != "magnet":
        raise ValueError(f"run '{run_dir}' trained model '{results.get('model')}'; routing "
                         "interpretability needs a MAGNET run")
    cfg = results.get("config", {})
    opts = dict(cfg.get("model_options") or {})
    data = _load_data(cfg)
    model = build_magnet(data, opts)
    if opts.get("view", "dual") == "dual":
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
