r"""Exponential moving average of the parameters (Polyak averaging) for evaluation.

With ``decay`` :math:`\gamma`, after every optimiser step

.. math::
    \bar\theta \leftarrow \gamma\,\bar\theta + (1 - \gamma)\,\theta ,

and validation, checkpoint selection and the test evaluation see :math:`\bar\theta` instead
of the last iterate :math:`\theta`; training itself is unchanged. It smooths the
epoch-to-epoch jitter of a model whose ranking moves a lot from one epoch to the next
(a sparse Top-K router is one), so that the checkpoint picked on validation is less a draw
of that jitter.

The average is swapped into the model in place (:meth:`WeightAverage.swapped`) rather than
kept in a copy (:class:`torch.optim.swa_utils.AveragedModel`), so that the model's own
per-epoch Python state (for example MAGNET's warm-up flag) is the one evaluation sees.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Dict, Iterator, Optional

import torch
from torch import Tensor, nn

__all__ = ["WeightAverage", "averaged"]


class WeightAverage:
    """EMA of ``model``'s parameters (see the module docstring).

    Args:
        model: the trained module; the average starts at its current parameters.
        decay: :math:`\\gamma` in ``(0, 1)``, per optimiser step (``0.99`` averages over
            roughly the last 100 steps).
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight-average decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.shadow: Dict[str, Tensor] = {n: p.detach().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One averaging step after an optimiser step."""
        names, params = zip(*model.named_parameters())
        torch._foreach_lerp_([self.shadow[n] for n in names], [p.detach() for p in params],
                             1.0 - self.decay)

    @contextmanager
    @torch.no_grad()
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Inside the block ``model`` holds the averaged parameters; the trained ones come
        back afterwards (also on an exception)."""
        params = dict(model.named_parameters())
        kept = {n: p.detach().clone() for n, p in params.items()}
        for n, p in params.items():
            p.copy_(self.shadow[n])
        try:
            yield model
        finally:
            for n, p in params.items():
                p.copy_(kept[n])

    def state_dict(self) -> Dict[str, object]:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        shadow = state["shadow"]
        if set(shadow) != set(self.shadow):
            raise ValueError("weight-average state does not match the model's parameters: "
                             f"missing {sorted(set(self.shadow) - set(shadow))}, "
                             f"unexpected {sorted(set(shadow) - set(self.shadow))}")
        self.decay = float(state["decay"])
        for n, t in shadow.items():
            self.shadow[n].copy_(t)


def averaged(average: Optional[WeightAverage], model: nn.Module) -> AbstractContextManager:
    """:meth:`WeightAverage.swapped` when there is an ``average``, else a no-op context."""
    return average.swapped(model) if average is not None else nullcontext(model)
