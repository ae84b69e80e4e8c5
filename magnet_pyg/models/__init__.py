"""Whole recommenders composed from :mod:`magnet_pyg.nn`: the baselines (BPR-MF, LightGCN,
FREEDOM), MAGNET and the seed peers (AnchorRec, CRANE, RecGOAT), each with its typed
configuration class (:mod:`magnet_pyg.models.config`) and registered by name
(:mod:`magnet_pyg.models.registry`)."""
from .base import Recommender, dot_score
from .bpr import BPRMF, BPRConfig
from .lightgcn import LightGCN, LightGCNConfig
from .freedom import FREEDOM, FreedomConfig
from .magnet import MAGNET, PRESETS as MAGNET_PRESETS, MagnetConfig, MagnetPreset
from .anchorrec import AnchorRec, AnchorRecConfig
from .crane import CRANE, CraneConfig
from .recgoat import RecGOAT, RecGoatConfig
from .registry import MODELS, ModelEntry, model_from_config, model_entry

__all__ = ["Recommender", "dot_score", "BPRMF", "LightGCN", "FREEDOM", "MAGNET", "MAGNET_PRESETS",
           "AnchorRec", "CRANE", "RecGOAT", "BPRConfig", "LightGCNConfig", "FreedomConfig",
           "MagnetConfig", "MagnetPreset", "AnchorRecConfig", "CraneConfig", "RecGoatConfig",
           "MODELS", "ModelEntry", "model_from_config", "model_entry"]
