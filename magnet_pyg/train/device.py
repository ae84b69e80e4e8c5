"""The compute device of a run, checked before anything heavy starts."""
from __future__ import annotations

import torch

__all__ = ["check_device"]


def check_device(device: str) -> torch.device:
    """``torch.device(device)``, refusing a CUDA device that torch cannot see."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' requested but torch sees no CUDA GPU "
                         f"(torch {torch.__version__}, cuda build: {torch.version.cuda})")
    return dev
