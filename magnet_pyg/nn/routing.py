r"""Entropy-triggered progressive routing schedule of MAGNET (Section 3.4, Eq. 22-26, 31;
Algorithm 2; Table 5 and Table 6 variants)."""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor

__all__ = ["EntropySchedule", "routing_statistics", "STRATEGIES", "MODES"]

#: stage-weight strategies :math:`\lambda_s(\tilde H)` of Table 6
STRATEGIES = ("lin", "quad", "const", "rev")
#: switching modes (the default and the Table 5 ablations)
MODES = ("entropy", "fixed", "coverage", "confidence", "off")


def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def routing_statistics(pi: Tensor) -> Dict[str, Tensor]:
    r"""Batch routing statistics of a dense routing matrix (Eq. 22-25, 34).

    Args:
        pi: ``[B, E]`` dense routing distributions (rows sum to 1).

    Returns:
        dict of tensors: ``pibar`` ``[E]`` (Eq. 22), ``entropy`` :math:`H(\bar\pi)` (Eq. 23,
        natural log), ``entropy_norm`` :math:`\tilde H = H / \log E` (Eq. 24; 1 when ``E = 1``),
        ``n_eff`` :math:`\exp(H)` (Eq. 25) and ``hhi`` :math:`\sum_e \bar\pi_e^2` (Eq. 34).
    """
    if pi.dim() != 2 or pi.size(0) == 0:
        raise ValueError(f"pi must have shape [B, E] with B > 0, got {tuple(pi.shape)}")
    pibar = pi.mean(dim=0)
    entropy = -torch.xlogy(pibar, pibar).sum()
    num_experts = pi.size(1)
    if num_experts > 1:
        entropy_norm = entropy / math.log(num_experts)
    else:
        entropy_norm = torch.ones_like(entropy)
    return {"pibar": pibar, "entropy": entropy, "entropy_norm": entropy_norm,
            "n_eff": entropy.exp(), "hhi": pibar.pow(2).sum()}


class EntropySchedule(torch.nn.Module):
    r"""Two-stage entropy-triggered schedule of the routing regularisers (MAGNET Section 3.4).

    At each training step (:meth:`update`) with dense routings :math:`\pi_{ui}` of the batch:
    :math:`\bar\pi` (Eq. 22), :math:`H(\bar\pi)` (Eq. 23), :math:`\tilde H = H/\log E` (Eq. 24),
    :math:`N_{\text{eff}} = e^{H}` (Eq. 25), then the counter and stage of Eq. 26 /
    Algorithm 2 lines 15-21: ``n += 1`` if :math:`\tilde H \ge H^*` else ``n = 0``; the stage
    switches **once** from 1 (coverage) to 2 (confidence) when ``n >= W`` and never switches
    back. The weights of the current step are computed after the switch (Algorithm 2 line 24),
    from the **detached** :math:`\tilde H`:

    ===========  ===========================================  ===========================================
    strategy     :math:`\lambda_{cov}` (stage 1 only)          :math:`\lambda_{conf}` (stage 2 only)
    ===========  ===========================================  ===========================================
    ``"lin"``    :math:`\lambda_r (1 - \tilde H)` (Eq. 31)     :math:`\lambda_r \tilde H` (Eq. 31)
    ``"quad"``   :math:`\lambda_r (1 - \tilde H)^2`            :math:`\lambda_r \tilde H^2`
    ``"const"``  :math:`\lambda_r`                             :math:`\lambda_r`
    ``"rev"``    :math:`\lambda_r \tilde H`                    :math:`\lambda_r (1 - \tilde H)`
    ===========  ===========================================  ===========================================

    (Table 6 / Section 4.12.2: Quad-Ent squares the Lin-Ent mappings; Rev-Ent keeps the stage
    gating and flips the entropy coupling.)

    Modes (Table 5 ablations): ``"entropy"`` (default, Eq. 26); ``"fixed"`` (Fixed-step Switch:
    stage 2 from the ``switch_at``-th update on, 1-based, e.g. ``T // 2 + 1``); ``"coverage"``
    (Coverage-only: stage 1 forever); ``"confidence"`` (Confidence-only: stage 2 from the
    start); ``"off"`` (w/o Routing Regularizers: both weights 0, i.e. :math:`\lambda_r = 0`;
    statistics and stage are still tracked as in ``"entropy"``).

    State (``stage``, ``counter``, ``step``, ``switch_step`` = step at which stage 2 began, or
    -1) lives in buffers, so it is saved and restored by ``state_dict`` (resumable training).
    Only :meth:`update` calls in training mode change it; in eval mode the statistics and the
    weights of the current stage are returned without touching the state.

    Args:
        threshold: :math:`H^* \in [0, 1]`.
        window: :math:`W \ge 1` consecutive qualifying steps.
        lambda_r: routing regularisation strength :math:`\lambda_r \ge 0`.
        strategy: one of :data:`STRATEGIES`.
        mode: one of :data:`MODES`.
        switch_at: update index (1-based) of the switch for ``mode="fixed"``.
    """

    stage: Tensor
    counter: Tensor
    step: Tensor
    switch_step: Tensor

    def __init__(
        self,
        threshold: float = 0.9,
        window: int = 3,
        lambda_r: float = 0.3,
        strategy: str = "lin",
        mode: str = "entropy",
        switch_at: Optional[int] = None,
    ) -> None:
        super().__init__()
        if not _is_number(threshold) or not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold H* must be in [0, 1], got {threshold}")
        if not _is_number(window) or float(window) != int(window) or int(window) < 1:
            raise ValueError(f"window W must be an integer >= 1, got {window}")
        if (not _is_number(lambda_r) or not float(lambda_r) >= 0.0
                or not math.isfinite(float(lambda_r))):
            raise ValueError(f"lambda_r must be a finite number >= 0, got {lambda_r}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got '{strategy}'")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got '{mode}'")
        if mode == "fixed":
            if (switch_at is None or not _is_number(switch_at)
                    or float(switch_at) != int(switch_at) or int(switch_at) < 1):
                raise ValueError(f"mode 'fixed' needs an integer switch_at >= 1, got {switch_at}")
        elif switch_at is not None:
            raise ValueError("switch_at is only used with mode='fixed'")
        self.threshold = float(threshold)
        self.window = int(window)
        self.lambda_r = float(lambda_r)
        self.strategy = strategy
        self.mode = mode
        self.switch_at = None if switch_at is None else int(switch_at)
        for name in ("stage", "counter", "step", "switch_step"):
            self.register_buffer(name, torch.zeros((), dtype=torch.long))
        self.reset()

    def reset(self) -> None:
        """Back to the initial state (stage 1, or 2 for ``mode="confidence"``)."""
        start2 = self.mode == "confidence"
        self.stage.fill_(2 if start2 else 1)
        self.counter.zero_()
        self.step.zero_()
        self.switch_step.fill_(0 if start2 else -1)

    def reset_parameters(self) -> None:
        """Alias of :meth:`reset` (the schedule has no learnable parameters)."""
        self.reset()

    def weights(self, entropy_norm: Union[float, Tensor],
                stage: Optional[int] = None) -> Tuple[float, float]:
        r"""``(lambda_cov, lambda_conf)`` for a normalised entropy :math:`\tilde H` and a stage
        (default: the current one), following ``strategy`` and ``mode``."""
        h = float(entropy_norm)
        stage = int(self.stage) if stage is None else int(stage)
        lam = 0.0 if self.mode == "off" else self.lambda_r
        if self.strategy == "lin":
            cov, conf = 1.0 - h, h
        elif self.strategy == "quad":
            cov, conf = (1.0 - h) ** 2, h ** 2
        elif self.strategy == "const":
            cov, conf = 1.0, 1.0
        else:  # "rev"
            cov, conf = h, 1.0 - h
        return (lam * cov if stage == 1 else 0.0, lam * conf if stage == 2 else 0.0)

    @torch.no_grad()
    def update(self, pi: Tensor) -> Dict[str, float]:
        r"""One step of Algorithm 2 (lines 15-24) from the batch's dense routing ``pi [B, E]``.

        Returns:
            dict of floats: ``lambda_cov``, ``lambda_conf`` (weights for this step's
            :func:`~magnet_pyg.nn.losses.coverage_loss` / ``confidence_loss``), ``entropy``,
            ``entropy_norm``, ``n_eff``, ``stage``, ``counter``, ``step``, ``switched``
            (1.0 on the step where stage 2 began).
        """
        stats = routing_statistics(pi.detach())
        h_norm = float(stats["entropy_norm"])
        switched = False
        if self.training:
            self.step += 1
            if h_norm >= self.threshold:
                self.counter += 1
            else:
                self.counter.zero_()
            if int(self.stage) == 1:
                if self.mode in ("entropy", "off"):
                    switched = int(self.counter) >= self.window
                elif self.mode == "fixed":
                    switched = int(self.step) >= self.switch_at
                if switched:
                    self.stage.fill_(2)
                    self.switch_step.copy_(self.step)
        lam_cov, lam_conf = self.weights(h_norm)
        return {
            "lambda_cov": lam_cov,
            "lambda_conf": lam_conf,
            "entropy": float(stats["entropy"]),
            "entropy_norm": h_norm,
            "n_eff": float(stats["n_eff"]),
            "stage": float(self.stage),
            "counter": float(self.counter),
            "step": float(self.step),
            "switched": float(switched),
        }

    def extra_repr(self) -> str:
        extra = f", switch_at={self.switch_at}" if self.mode == "fixed" else ""
        return (f"threshold={self.threshold}, window={self.window}, lambda_r={self.lambda_r}, "
                f"strategy='{self.strategy}', mode='{self.mode}'{extra}")
