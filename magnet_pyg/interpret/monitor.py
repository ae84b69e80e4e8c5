r"""Record MAGNET's per-pair routing statistics during training.

MAGNET's own ``epoch_logs`` stores the epoch's mean routing vector (``expert_mass``) and the
controller's mini-batch entropy, from which only dataset-level quantities follow. The
decisiveness statistics of Section 4.11 (winner share, Top3Mass, top1-top2 gap) are per-pair
quantities; :class:`RoutingMonitor` collects them without touching the model's code or its
training: it observes exactly the routings the entropy controller receives (the dense
:math:`\pi_{ui}` of the batch's observed pairs, Algorithm 2's :math:`\Pi`), and appends the
epoch's statistics to ``model.epoch_logs()``, so the trainer writes them into
``results.json`` (keys ``routing_*``, read by :func:`~magnet_pyg.interpret.epoch_dynamics`).

Example::

    model = MAGNET(...)
    with RoutingMonitor(model):
        results = Trainer(config, extra).fit(model, data, "magnet")
"""
from __future__ import annotations

from typing import Any, Dict, List

from .statistics import ExpertLayout, RoutingAccumulator

__all__ = ["RoutingMonitor"]


class RoutingMonitor:
    r"""Adds per-pair routing statistics of every training epoch to a MAGNET model's
    ``epoch_logs`` (see the module docstring).

    Keys added per epoch: ``routing_winner_share``, ``routing_top3_mass``,
    ``routing_top12_gap``, ``routing_pair_entropy_norm``, ``routing_max_load``,
    ``routing_max_load_hard``, ``routing_num_pairs`` (definitions in
    :mod:`magnet_pyg.interpret.statistics`) and, with ``record_steps``, the step-level traces
    ``routing_steps_spec_score`` (:math:`1 - \tilde H` of each mini-batch, Eq. 24) and
    ``routing_steps_stage``.

    The monitor wraps two *instance* attributes (``model.schedule.update`` and
    ``model.epoch_logs``); :meth:`detach` (or leaving the ``with`` block) restores them. It
    changes no number the model computes.

    Args:
        model: a :class:`~magnet_pyg.models.MAGNET` with the MoE head.
        record_steps: also keep the step-level traces.
    """

    def __init__(self, model: Any, record_steps: bool = True):
        self.model = model
        self.record_steps = record_steps
        self.layout = ExpertLayout.from_model(model)
        self.acc = RoutingAccumulator(self.layout.num_experts)
        self.step_spec: List[float] = []
        self.step_stage: List[float] = []
        self.attached = False

    def attach(self) -> "RoutingMonitor":
        if self.attached:
            return self
        sched = self.model.schedule
        orig_update = sched.update
        orig_logs = self.model.epoch_logs

        def update(pi, *args, **kwargs):
            out = orig_update(pi, *args, **kwargs)
            if sched.training:
                self.acc.update(pi)
                if self.record_steps:
                    self.step_spec.append(1.0 - float(out["entropy_norm"]))
                    self.step_stage.append(float(out["stage"]))
            return out

        def epoch_logs():
            logs = orig_logs()
            logs.update(self.epoch_summary())
            return logs

        sched.update = update
        self.model.epoch_logs = epoch_logs
        self.attached = True
        return self

    def epoch_summary(self) -> Dict[str, Any]:
        """The statistics of the pairs seen since the last call, then reset."""
        out: Dict[str, Any] = {}
        if self.acc.n:
            s = self.acc.compute()
            for k in ("winner_share", "top3_mass", "top12_gap", "pair_entropy_norm", "max_load",
                      "max_load_hard", "num_pairs"):
                out[f"routing_{k}"] = s[k]
            if self.record_steps:
                out["routing_steps_spec_score"] = list(self.step_spec)
                out["routing_steps_stage"] = list(self.step_stage)
        self.acc.reset()
        self.step_spec, self.step_stage = [], []
        return out

    def detach(self) -> None:
        if not self.attached:
            return
        self.model.schedule.__dict__.pop("update", None)
        self.model.__dict__.pop("epoch_logs", None)
        self.attached = False

    def __enter__(self) -> "RoutingMonitor":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()
