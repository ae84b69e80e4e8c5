"""Shared fixtures. Real-data tests read ``$MAGNET_PYG_DATA`` (default ``../shared/data``);
when the data is missing they skip locally but FAIL under ``CI=true``."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from magnet_pyg.data import default_data_root, load_mmrec, synthetic

torch.set_num_threads(min(2, torch.get_num_threads()))


def _real(name: str) -> Path:
    path = default_data_root() / name
    if not (path / f"{name}.inter").exists():
        msg = (f"real dataset '{name}' not found at {path} "
               f"(set MAGNET_PYG_DATA to the folder holding {name}/)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def baby_path() -> Path:
    return _real("baby")


@pytest.fixture(scope="session")
def tiktok_path() -> Path:
    return _real("tiktok")


@pytest.fixture(scope="session")
def tiktok(tiktok_path):
    return load_mmrec(tiktok_path)


@pytest.fixture(scope="session")
def baby(baby_path):
    return load_mmrec(baby_path)


@pytest.fixture()
def tiny():
    return synthetic("tiny", seed=0)


@pytest.fixture(scope="session")
def sports_path() -> Path:
    return _real("sports")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is fastest and robust to a busy machine (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    """The tiny synthetic dataset (modalities image (16), text (8)), shared by a test module."""
    return synthetic("tiny", seed=0)


def modality_dims(d):
    """``{modality: feature size}`` of a dataset, in its modality order."""
    from magnet_pyg.data import modality_features
    return {m: int(x.size(1)) for m, x in modality_features(d).items()}


def _has_sampler() -> bool:
    from magnet_pyg.train.sampled import check_sampling_backend
    try:
        check_sampling_backend()
        return True
    except ValueError:  # neither pyg-lib nor torch-sparse: PyG cannot sample neighbours
        return False


#: whether PyG can sample neighbours here, and the mark of tests that need it
HAS_SAMPLER = _has_sampler()
needs_sampler = pytest.mark.skipif(not HAS_SAMPLER, reason="NeighborLoader needs pyg-lib or torch-sparse")
