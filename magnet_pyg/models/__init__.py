"""Whole recommenders composed from :mod:`magnet_pyg.nn`: the baselines (BPR-MF, LightGCN,
FREEDOM), MAGNET and the seed peers (AnchorRec, CRANE, RecGOAT)."""
from .base import Recommender, dot_score
from .bpr import BPRMF
from .lightgcn import LightGCN
from .freedom import FREEDOM
from .magnet import MAGNET, PRESETS as MAGNET_PRESETS
from .anchorrec import AnchorRec
from .crane import CRANE
from .recgoat import RecGOAT

__all__ = ["Recommender", "dot_score", "BPRMF", "LightGCN", "FREEDOM", "MAGNET", "MAGNET_PRESETS",
           "AnchorRec", "CRANE", "RecGOAT"]
