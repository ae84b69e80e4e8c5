"""Layers usable alone in any PyG model."""
from .adjacency import (bipartite_normalized_adjacency, check_adjacency, normalized_adjacency,
                        row_normalized, sparse_mm, transpose_csr)
from .cues import ModalityCues, batch_cues
from .dual_view import DualViewEncoder
from .feature_tables import FeatureTables
from .indexing import gather_rows
from .init import xavier_user_item_
from .layerwise import BipartiteCSR, LayerwiseGraph, layerwise_cues, layerwise_propagate
from .losses import (bpr_loss, confidence_loss, coverage_loss, embedding_l2,
                     view_infonce)
from .moe import FusionHead, MoEOutput, TripletMoEHead
from .protocol import Recommender, SampledTrainingUnsupported, SamplingSpec, dot_score
from .pruning import degree_edge_probability, degree_sensitive_prune
from .routing import MODES, STRATEGIES, EntropySchedule, routing_statistics
from .topk_mixture import topk_mix
from .templates import (FAMILIES, FAMILY_COMPOSITIONS, ExpertPool, aux_order,
                        bal_template, canonical_template, com_template, dom_template,
                        group_permutation, permute_to_global, triplet_expert_pool)
from .subgraph import (VIEW_RELATIONS, SampledBatch, SampledGraph, batch_embeddings, encode_batch,
                       propagate_batch, propagate_subgraph, triple_rows, unique_rows, view_subgraph)
from .seed_propagation import PropagationPlan, encode_seeds, propagation_plan

__all__ = [
    "topk_mix",
    "normalized_adjacency", "bipartite_normalized_adjacency", "check_adjacency", "row_normalized",
    "sparse_mm",
    "transpose_csr", "gather_rows",
    "DualViewEncoder", "ModalityCues", "TripletMoEHead", "FusionHead", "MoEOutput",
    "EntropySchedule", "routing_statistics", "STRATEGIES", "MODES",
    "FAMILIES", "FAMILY_COMPOSITIONS", "ExpertPool", "triplet_expert_pool", "aux_order",
    "group_permutation", "permute_to_global", "canonical_template", "dom_template",
    "bal_template", "com_template",
    "bpr_loss", "embedding_l2", "coverage_loss", "confidence_loss", "view_infonce",
    "batch_cues", "FeatureTables", "xavier_user_item_", "degree_edge_probability",
    "degree_sensitive_prune", "Recommender", "SamplingSpec", "SampledTrainingUnsupported", "dot_score",
    "BipartiteCSR", "LayerwiseGraph", "layerwise_propagate", "layerwise_cues",
    "VIEW_RELATIONS", "SampledBatch", "SampledGraph", "view_subgraph", "propagate_subgraph",
    "batch_embeddings", "propagate_batch", "encode_batch", "unique_rows", "triple_rows",
    "PropagationPlan", "propagation_plan", "encode_seeds",
]
