"""Whole recommenders composed from :mod:`magnet_pyg.nn`."""
from .base import Recommender, dot_score
from .bpr import BPRMF
from .lightgcn import LightGCN

__all__ = ["Recommender", "dot_score", "BPRMF", "LightGCN"]
