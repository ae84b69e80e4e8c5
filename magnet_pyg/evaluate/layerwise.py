r"""Exact layer-wise inference in node chunks, for any model of the
:class:`~magnet_pyg.nn.protocol.Recommender` protocol.

At scale the final representations are computed **layer by layer** in chunks of destination
nodes (:mod:`magnet_pyg.nn.layerwise`), so that the full-graph adjacency never has to be
built or moved to the GPU at once; each model composes its state in
:meth:`~magnet_pyg.nn.protocol.Recommender.layerwise_inference` (LightGCN, MAGNET; the other
models fall back to their full-graph inference). The result is the exact full-graph state (up to
float summation order), so evaluation then runs the exact full ranking in user chunks::

    lw = LayerwiseGraph(data, views=("ui", "uig"))
    state = layerwise_inference(model, lw, chunk_size=65536)
    Evaluator(data).evaluate(model, None, "test", state=state)
"""
from __future__ import annotations

from typing import Any

import torch

from ..nn.layerwise import BipartiteCSR, LayerwiseGraph, layerwise_cues, layerwise_propagate

__all__ = ["BipartiteCSR", "LayerwiseGraph", "layerwise_propagate", "layerwise_cues",
           "layerwise_inference"]


@torch.no_grad()
def layerwise_inference(model, graph: LayerwiseGraph, chunk_size: int = 65536) -> Any:
    """The model's exact inference state computed layer-wise in node chunks
    (:meth:`~magnet_pyg.nn.protocol.Recommender.layerwise_inference`); pass it to
    :meth:`Evaluator.evaluate(..., state=...) <magnet_pyg.evaluate.Evaluator.evaluate>` or to
    ``model.score``. Runs in eval mode (no dropout) and restores the mode."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    was_training = model.training
    model.eval()
    try:
        return model.layerwise_inference(graph, chunk_size)
    finally:
        model.train(was_training)
