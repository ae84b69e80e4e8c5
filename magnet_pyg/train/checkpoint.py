"""Atomic writes: a reader sees the old file or the complete new one, never half of one."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Union

import torch


def _atomic(path: Union[str, Path], write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: Union[str, Path]) -> None:
    _atomic(path, lambda f: torch.save(obj, f))


def atomic_json_dump(obj: Any, path: Union[str, Path]) -> None:
    """Strict JSON (a NaN or infinite number is an error, not an invalid ``NaN`` token)."""
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"
    _atomic(path, lambda f: f.write(text.encode()))


def load_checkpoint(path: Union[str, Path], map_location: Any = "cpu") -> Any:
    return torch.load(path, map_location=map_location, weights_only=True)


def warm_start(model: torch.nn.Module, path: Union[str, Path], map_location: Any = "cpu") -> list:
    """Copy into ``model`` every tensor of the checkpoint ``path`` (a ``best.pt``/``last.pt``
    or a run folder, whose ``best.pt`` is used) whose name and shape match, for example the
    layer-0 embeddings ``encoder.embedding.weight`` of a LightGCN run into MAGNET's backbone.

    Returns the names copied. Raises ``ValueError`` naming the checkpoint when nothing
    matches, or when a tensor of the same name has another shape (another dataset or size).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"warm start: checkpoint {path} not found")
    state = load_checkpoint(path, map_location)
    state = state.get("model", state)
    own = model.state_dict()
    bad = [f"{k}: {tuple(v.shape)} in {path}, {tuple(own[k].shape)} in the model"
           for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise ValueError("warm start: shapes differ (another dataset or embedding size?): " + "; ".join(bad))
    names = [k for k in state if k in own]
    if not names:
        raise ValueError(f"warm start: no tensor of {path} matches a parameter of the model")
    with torch.no_grad():
        for k in names:
            own[k].copy_(state[k])
    return names
