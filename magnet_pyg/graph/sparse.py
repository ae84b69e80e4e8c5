"""Sparse matrices from coordinate lists."""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["coalesced_csr"]


def coalesced_csr(row: Tensor, col: Tensor, value: Tensor, shape: Sequence[int]) -> Tensor:
    """``torch.sparse_csr`` matrix of ``shape`` from ``(row, col, value)`` entries; duplicate
    coordinates are summed."""
    coo = torch.sparse_coo_tensor(torch.stack([row, col]), value, tuple(shape),
                                  check_invariants=False).coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        return coo.to_sparse_csr()
