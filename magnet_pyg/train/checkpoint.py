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
    _atomic(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()))


def load_checkpoint(path: Union[str, Path], map_location: Any = "cpu") -> Any:
    return torch.load(path, map_location=map_location, weights_only=True)
