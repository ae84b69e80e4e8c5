r"""Routing interpretability of MAGNET (paper Sections 4.9-4.11 and 5.3).

* :mod:`~magnet_pyg.interpret.statistics`: N_eff / HHI / Div (Eq. 33-34), modality and family
  mass over an evaluation split; SpecScore, Top3Mass, MaxLoad, winner share, top1-top2 gap over
  training (:func:`epoch_dynamics`);
* :mod:`~magnet_pyg.interpret.monitor`: :class:`RoutingMonitor` records per-pair routing
  statistics of every training epoch;
* :mod:`~magnet_pyg.interpret.attribution`: per-recommendation group x family routing mass,
  top experts and modality contributions (:func:`explain_user`, :func:`attribute_pairs`);
* :mod:`~magnet_pyg.interpret.buckets`: dual-view diagnostics by visibility and user activity
  (:func:`dual_view_gains`);
* :mod:`~magnet_pyg.interpret.figures`: the figures, drawn from the JSON dicts, each with a
  caption defining its terms, saved as PNG and PDF (:func:`save`);
* :mod:`~magnet_pyg.interpret.run` / :mod:`~magnet_pyg.interpret.report`: rebuild a run from
  its folder and write ``RUN/report/`` (``magnet-pyg report`` / ``magnet-pyg explain``).
"""
from .attribution import attribute_pairs, explain_user
from .buckets import (ACTIVITY, DIFFICULTY, activity_buckets, bucket_ndcg, difficulty_buckets,
                      dual_view_gains, knn_neighbors, visibility)
from .figures import (FORMATS, GLOSSARY, dual_view_figure, dynamics_figure, explain_figure,
                      save, usage_figure)
from .monitor import RoutingMonitor
from .report import build_report, format_explanation, write_explanation, write_report
from .run import RunContext, build_magnet, build_model, load_run
from .statistics import (ExpertLayout, RoutingAccumulator, concentration, epoch_dynamics,
                         pair_summary, routing_of_pairs, routing_profile, split_routing_statistics)

__all__ = [
    "ExpertLayout", "RoutingAccumulator", "concentration", "pair_summary", "routing_profile",
    "routing_of_pairs", "split_routing_statistics", "epoch_dynamics", "RoutingMonitor",
    "attribute_pairs", "explain_user",
    "DIFFICULTY", "ACTIVITY", "knn_neighbors", "visibility", "difficulty_buckets",
    "activity_buckets", "bucket_ndcg", "dual_view_gains",
    "dynamics_figure", "usage_figure", "dual_view_figure", "explain_figure", "save", "FORMATS",
    "GLOSSARY",
    "RunContext", "build_magnet", "build_model", "load_run",
    "build_report", "write_report", "write_explanation", "format_explanation",
]
