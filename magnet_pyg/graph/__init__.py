r"""Content-induced graph augmentation (MAGNET section 3.2.1-3.2.2, Eq. 1-3).

* :mod:`.knn`: item-item top-``k`` cosine neighbours per modality (Eq. 1), exact (torch,
  FAISS) or approximate (FAISS PCA / IVF / HNSW with exact re-scoring);
* :mod:`.expansion`: candidate scores :math:`c_{u,j}` as a sparse product and the
  top-``r`` induced edges :math:`\mathcal E^+` (Eq. 2-3);
* :mod:`.views`: the views :math:`\mathcal G_{UI}` / :math:`\mathcal G_{UIG}` in one
  ``HeteroData`` (:func:`add_induced_edges`, :func:`view_edge_index`, :func:`view_data`);
* :mod:`.cache`: digest-keyed, atomically written cache of the above;
* :mod:`.item_graph`: frozen item-item kNN graphs of the peer models (FREEDOM style);
* :mod:`.sparse`: sparse matrices from coordinate lists.
"""
from .cache import CACHE_VERSION, digest
from .expansion import expand_candidates, item_similarity
from .item_graph import (IMAGE_MODALITIES, MMREC_IMAGE_WEIGHT, item_graph_weights, knn_edge_index,
                         knn_normalized_adjacency, modality_item_graph)
from .knn import (APPROXIMATE, BACKENDS, ANNParams, KNNGraph, build_item_knn, item_knn,
                  knn_recall, knn_search, knn_to_sparse, resolve_backend)
from .sparse import coalesced_csr
from .views import VIEWS, add_induced_edges, induced_edges, view_data, view_edge_index

__all__ = [
    "CACHE_VERSION", "digest", "expand_candidates", "item_similarity", "APPROXIMATE", "BACKENDS",
    "ANNParams", "KNNGraph", "build_item_knn", "item_knn", "knn_recall", "knn_search",
    "knn_to_sparse", "resolve_backend", "VIEWS", "add_induced_edges", "induced_edges",
    "view_data", "view_edge_index", "IMAGE_MODALITIES", "MMREC_IMAGE_WEIGHT", "item_graph_weights",
    "knn_edge_index", "knn_normalized_adjacency", "modality_item_graph", "coalesced_csr",
]
