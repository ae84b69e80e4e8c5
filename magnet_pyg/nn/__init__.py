"""Layers usable alone in any PyG model."""
from .adjacency import (bipartite_normalized_adjacency, check_adjacency, normalized_adjacency,
                        row_normalized, sparse_mm, transpose_csr)
from .cues import ModalityCues
from .dual_view import DualViewEncoder
from .indexing import gather_rows
from .losses import (bpr_loss, confidence_loss, coverage_loss, embedding_l2,
                     view_infonce)
from .moe import FusionHead, MoEOutput, TripletMoEHead
from .routing import MODES, STRATEGIES, EntropySchedule, routing_statistics
from .templates import (FAMILIES, FAMILY_COMPOSITIONS, ExpertPool, aux_order,
                        bal_template, canonical_template, com_template, dom_template,
                        group_permutation, permute_to_global, triplet_expert_pool)

__all__ = [
    "normalized_adjacency", "bipartite_normalized_adjacency", "check_adjacency", "row_normalized",
    "sparse_mm",
    "transpose_csr", "gather_rows",
    "DualViewEncoder", "ModalityCues", "TripletMoEHead", "FusionHead", "MoEOutput",
    "EntropySchedule", "routing_statistics", "STRATEGIES", "MODES",
    "FAMILIES", "FAMILY_COMPOSITIONS", "ExpertPool", "triplet_expert_pool", "aux_order",
    "group_permutation", "permute_to_global", "canonical_template", "dom_template",
    "bal_template", "com_template",
    "bpr_loss", "embedding_l2", "coverage_loss", "confidence_loss", "view_infonce",
]
