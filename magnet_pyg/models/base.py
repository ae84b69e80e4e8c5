"""The model protocol (:mod:`magnet_pyg.nn.protocol`), re-exported where the models live.

The trainers and the evaluator import it from :mod:`magnet_pyg.nn.protocol`, below the
models, so that they never depend on a concrete model."""
from ..nn.protocol import Logs, Recommender, SampledTrainingUnsupported, SamplingSpec, dot_score

__all__ = ["Logs", "Recommender", "SampledTrainingUnsupported", "SamplingSpec", "dot_score"]
