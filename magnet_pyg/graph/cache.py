r"""On-disk cache of the graph-augmentation products (kNN lists, induced edges).

A cached file is named by a digest of *everything its content depends on* (the feature
or edge tensors byte for byte, with dtype and shape, plus every parameter and
:data:`CACHE_VERSION`), so a changed input gives a different name and a stale file can
never be loaded. Files are written to a temporary name in the same folder and moved into
place with :func:`os.replace` (atomic: a reader sees the old state or the whole new
file), and read with ``torch.load(..., weights_only=True)``. An unreadable file is
reported and recomputed.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import Tensor

log = logging.getLogger(__name__)

#: bump when an algorithm change alters cached results
CACHE_VERSION = 1

__all__ = ["CACHE_VERSION", "digest", "cache_file", "load_cached", "save_atomic"]


def _update(h, part: Any) -> None:
    if isinstance(part, Tensor):
        t = part.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}|".encode())
        if t.numel():
            flat = t.reshape(-1)
            if flat.dtype == torch.bool:
                flat = flat.to(torch.uint8)
            step = 1 << 26
            raw = flat.view(torch.uint8) if flat.element_size() > 1 else flat
            for s in range(0, raw.numel(), step):  # hash in slices: no full-size copy
                h.update(raw[s:s + step].numpy().data)
    elif isinstance(part, (list, tuple)):
        h.update(f"L{len(part)}|".encode())
        for p in part:
            _update(h, p)
    elif isinstance(part, dict):
        h.update(f"D{len(part)}|".encode())
        for k in sorted(part):
            _update(h, str(k))
            _update(h, part[k])
    elif part is None or isinstance(part, (bool, int, float, str)):
        h.update(f"{type(part).__name__}:{part!r}|".encode())
    else:
        raise TypeError(f"cannot digest a {type(part).__name__}")


def digest(*parts: Any) -> str:
    """Hex BLAKE2b digest of tensors (bytes, dtype, shape), numbers, strings, lists and
    dicts, prefixed by :data:`CACHE_VERSION`."""
    h = hashlib.blake2b(digest_size=20)
    _update(h, ("magnet_pyg.graph", CACHE_VERSION) + parts)
    return h.hexdigest()


def cache_file(cache_dir: Union[str, Path], kind: str, key: str) -> Path:
    """``<cache_dir>/<kind>-<key>.pt``."""
    return Path(cache_dir) / f"{kind}-{key}.pt"


def load_cached(path: Union[str, Path]) -> Optional[Dict[str, Any]]:
    """The cached dict at ``path``, or ``None`` when absent or unreadable (logged)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / truncated / foreign file: recompute
        log.warning("graph cache %s is unreadable (%s: %s); recomputing", path,
                    type(e).__name__, e)
        return None
    if not isinstance(obj, dict):
        log.warning("graph cache %s does not hold a dict; recomputing", path)
        return None
    log.info("graph cache hit: %s", path)
    return obj


def save_atomic(obj: Dict[str, Any], path: Union[str, Path]) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then :func:`os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
