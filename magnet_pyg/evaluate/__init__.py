"""Exact full-ranking evaluation."""
from .evaluator import Evaluator
from .ranking import METRICS, CSRIndex, full_ranking

__all__ = ["Evaluator", "METRICS", "CSRIndex", "full_ranking"]
