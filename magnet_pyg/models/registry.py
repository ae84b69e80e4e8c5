"""The models by name: ``name -> (model class, configuration class)``, and building a model from
its name and configuration.

=============  =====================================  =========================================
name           model                                  configuration
=============  =====================================  =========================================
``bpr``        :class:`~magnet_pyg.models.BPRMF`      :data:`~magnet_pyg.models.BPRConfig`
``lightgcn``   :class:`~magnet_pyg.models.LightGCN`   :data:`~magnet_pyg.models.LightGCNConfig`
``magnet``     :class:`~magnet_pyg.models.MAGNET`     :data:`~magnet_pyg.models.MagnetConfig`
``freedom``    :class:`~magnet_pyg.models.FREEDOM`    :data:`~magnet_pyg.models.FreedomConfig`
``anchorrec``  :class:`~magnet_pyg.models.AnchorRec`  :data:`~magnet_pyg.models.AnchorRecConfig`
``crane``      :class:`~magnet_pyg.models.CRANE`      :data:`~magnet_pyg.models.CraneConfig`
``recgoat``    :class:`~magnet_pyg.models.RecGOAT`    :data:`~magnet_pyg.models.RecGoatConfig`
=============  =====================================  =========================================
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, NamedTuple, Optional

from .anchorrec import AnchorRec, AnchorRecConfig
from .bpr import BPRMF, BPRConfig
from .config import constructor_kwargs, suggestion
from .crane import CRANE, CraneConfig
from .freedom import FREEDOM, FreedomConfig
from .lightgcn import LightGCN, LightGCNConfig
from .magnet import MAGNET, PRESETS as MAGNET_PRESETS, MagnetConfig, MagnetPreset
from .recgoat import RecGOAT, RecGoatConfig


class ModelEntry(NamedTuple):
    """One registered model."""
    model: type                 # the Recommender subclass
    config: type                # its configuration class (magnet_pyg.models.config.model_config)
    multimodal: bool            # the constructor's third argument is {modality: feature size}
    presets: Optional[Mapping[str, MagnetPreset]] = None   # named configurations, if any

    def train_defaults(self, preset: Optional[str] = None) -> Dict[str, Any]:
        """:class:`~magnet_pyg.train.TrainConfig` fields the model (or its ``preset``) sets:
        the preset's optimiser settings, else the class's ``default_train``."""
        if preset is not None and self.presets:
            return self.presets[preset].train_defaults()
        return dict(getattr(self.model, "default_train", {}))


MODELS: Dict[str, ModelEntry] = {
    "bpr": ModelEntry(BPRMF, BPRConfig, False),
    "lightgcn": ModelEntry(LightGCN, LightGCNConfig, False),
    "magnet": ModelEntry(MAGNET, MagnetConfig, True, MAGNET_PRESETS),
    "freedom": ModelEntry(FREEDOM, FreedomConfig, True),
    "anchorrec": ModelEntry(AnchorRec, AnchorRecConfig, True),
    "crane": ModelEntry(CRANE, CraneConfig, True),
    "recgoat": ModelEntry(RecGOAT, RecGoatConfig, True),
}


def model_entry(name: str) -> ModelEntry:
    """The :class:`ModelEntry` of ``name``; an unknown name is a :class:`ValueError` with the
    closest names."""
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; {suggestion(str(name), list(MODELS))}")
    return MODELS[name]


def model_from_config(name: str, config: Any, num_users: int, num_items: int,
                modality_dims: Optional[Mapping[str, int]] = None) -> Any:
    """A fresh model ``name`` with the constructor arguments held by ``config`` (an instance
    of its configuration class); ``modality_dims`` (``{modality: feature size}``, in the
    dataset's order) is needed by the multimodal models."""
    entry = model_entry(name)
    if not isinstance(config, entry.config):
        raise TypeError(f"model '{name}' needs a {entry.config.__name__}, got {type(config).__name__}")
    kwargs = constructor_kwargs(config)
    if entry.multimodal:
        if modality_dims is None:
            raise ValueError(f"model '{name}' needs the modality feature sizes (modality_dims)")
        return entry.model(num_users, num_items, dict(modality_dims), **kwargs)
    return entry.model(num_users, num_items, **kwargs)
