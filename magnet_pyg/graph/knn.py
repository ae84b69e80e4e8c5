r"""Item-item top-:math:`k` cosine neighbours per content modality (MAGNET Eq. 1).

For a modality :math:`m` with item features :math:`\mathbf X^m \in \mathbb R^{I \times d}`,

.. math::
    s^m_{ij} = \frac{\langle \mathbf x^m_i, \mathbf x^m_j \rangle}
                    {\lVert \mathbf x^m_i \rVert \, \lVert \mathbf x^m_j \rVert},

and item :math:`i` keeps its top-:math:`k` items :math:`\mathcal N^m(i)` by :math:`s^m_{ij}`.

Conventions (the same for every backend):

* **Self-matches are excluded**: :math:`i \notin \mathcal N^m(i)`, also when a duplicate
  row scores 1 as well (the duplicate is kept, the item itself is not).
* **Ties** are broken by the smaller item id: rows are ordered by
  ``(score desc, item id asc)``. The ``torch`` backend also selects the ``k``-th place
  that way for any number of tied items, so its result is a deterministic function of the
  features; FAISS backends apply the rule among the candidates they return (``faiss``
  fetches ``k +`` :data:`TIE_MARGIN`).
* **Zero-norm rows** (cosine undefined) are reported with a logged warning and their
  count; they have no neighbours and are nobody's neighbour, so no NaN can leak.
* Returned values are always the exact cosines of the pairs returned (approximate
  backends re-score their candidates exactly); missing neighbours (fewer than ``k`` valid
  items) are padded with index ``-1``.

Backends:

``"torch"``
    Exact, chunked over query rows (``[chunk, I]`` scores at a time), on CUDA when
    available (``device=None``), else CPU.
``"faiss"``
    Exact FAISS ``IndexFlatIP`` on L2-normalised rows (a GPU index when
    ``faiss.get_num_gpus() > 0``).
``"faiss-pca"``, ``"faiss-ivf"``, ``"faiss-hnsw"``
    Approximate: rows are optionally projected to ``ann.reduce_dim`` dimensions by a PCA
    fitted on a seeded sample (:class:`ANNParams`), a FAISS index (exhaustive ``Flat``,
    ``IVF-Flat`` or ``HNSW-Flat``) returns ``ceil(refine_factor * k)`` candidates per item,
    and the candidates are re-scored exactly in the full space; the top ``k`` are kept.
    ``faiss-pca`` and ``faiss-ivf`` run on GPU when FAISS has one; HNSW is CPU-only.
    Measure the neighbour recall with :func:`knn_recall`.
``"auto"``
    Exact (``torch``) when a CUDA device is present or the catalogue is small
    (:math:`I^2 d \le` ``exact_limit``), otherwise ``faiss-pca``.

Why ``faiss-pca`` is the approximate default (measured at Electronics scale, 63k items,
4096-d and 384-d, ``k = 30``, 2 CPU cores, ``benchmarks/bench_graph.py``): a PCA to 64
dimensions, an exhaustive search there for ``2k`` candidates and exact re-scoring reach a
recall of about 0.99 in roughly 15-25 CPU-seconds per modality. IVF-Flat over the raw
rows is memory-bound and IVF over the PCA space loses recall on weakly clustered
features (about 0.89 with a quarter of the lists probed), and HNSW build plus search cost
several times more for the same recall. ``reduce_dim``/``refine_factor`` trade recall
for time; :func:`knn_recall` measures it.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from tqdm.auto import tqdm

from ..data.schema import modality_features, modality_names, num_items
from .cache import cache_file, digest, load_cached, save_atomic

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "faiss", "faiss-pca", "faiss-ivf", "faiss-hnsw")
APPROXIMATE = ("faiss-pca", "faiss-ivf", "faiss-hnsw")
#: ``auto`` stays exact on CPU up to this many multiply-adds (:math:`I^2 d`)
EXACT_LIMIT = 1e12
#: extra candidates the exact FAISS backend fetches to order ties at the k-th place
TIE_MARGIN = 16

__all__ = ["BACKENDS", "APPROXIMATE", "EXACT_LIMIT", "ANNParams", "resolve_backend",
           "check_features", "knn_search", "knn_to_sparse", "item_knn", "knn_recall",
           "KNNGraph", "knn_cache_key", "build_item_knn", "checked_modalities", "check_k",
           "resolve_backend_for", "knn_graphs"]


@dataclass(frozen=True)
class ANNParams:
    r"""Settings of the approximate backends (ignored by ``torch`` and ``faiss``).

    Args:
        reduce_dim: PCA dimension of the candidate search (``None``: no reduction; no
            reduction either when the features have at most this many dimensions).
        refine_factor: candidates per item, as a multiple of ``k``, re-scored exactly.
        pca_sample: rows (sampled with ``seed``) the PCA basis is fitted on.
        nlist, nprobe: inverted lists and lists visited (``faiss-ivf``).
        hnsw_m, ef_construction, ef_search: graph degree and beam widths (``faiss-hnsw``);
            ``ef_search`` is raised to the number of candidates when smaller.
        seed: seed of the PCA sample and random projection, and of the IVF k-means.
    """
    reduce_dim: Optional[int] = 64
    refine_factor: float = 2.0
    pca_sample: int = 8192
    nlist: int = 1024
    nprobe: int = 32
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: int = 128
    seed: int = 0


def resolve_backend(backend: str, num_items: int, dim: int,
                    exact_limit: float = EXACT_LIMIT) -> str:
    """The concrete backend ``"auto"`` stands for (others are returned unchanged)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown kNN backend '{backend}', expected one of {BACKENDS}")
    if backend != "auto":
        return backend
    if torch.cuda.is_available() or float(num_items) ** 2 * dim <= exact_limit:
        return "torch"
    return "faiss-pca"


def check_features(x: Tensor, name: str = "features", num_items: Optional[int] = None,
                   source: Optional[str] = None, warn_zero: bool = True) -> Tuple[Tensor, Tensor]:
    r"""Validate one modality's ``[I, d]`` matrix; return it as contiguous ``float32`` CPU
    and its ``[I]`` row norms (``float32``).

    Raises :class:`ValueError` naming the modality (and ``source`` file, if given) for a
    non-2-D matrix, a row count other than ``num_items``, or NaN/inf values. Zero-norm
    rows are only reported (logged warning with their count).
    """
    where = f"modality '{name}'" + (f" ({source})" if source else "")
    if x.dim() != 2:
        raise ValueError(f"{where}: expected a 2-D [num_items, dim] matrix, got shape {tuple(x.shape)}")
    if num_items is not None and x.size(0) != num_items:
        raise ValueError(f"{where}: has {x.size(0)} rows but the graph has {num_items} items "
                         "(row i must be item i)")
    x = x.detach().to("cpu", torch.float32).contiguous()
    norm = torch.empty(x.size(0), dtype=torch.float32)
    step = max(1, (1 << 24) // max(1, x.size(1)))
    for s in range(0, x.size(0), step):  # chunked: no full-size temporaries
        blk = x[s:s + step]
        nb = torch.linalg.vector_norm(blk, dim=1)
        odd = ~torch.isfinite(nb)                    # NaN/inf entries, or a float32 overflow
        if bool(odd.any()):
            bad = ~torch.isfinite(blk[odd]).all(dim=1)
            if bool(bad.any()):
                n_bad = sum(int((~torch.isfinite(x[t:t + step]).all(dim=1)).sum())
                            for t in range(s, x.size(0), step))
                row = s + int(odd.nonzero().view(-1)[bad][0])
                raise ValueError(f"{where}: {n_bad} rows hold NaN or inf values (first: row {row})")
            nb[odd] = torch.linalg.vector_norm(blk[odd].double(), dim=1).clamp_max(3e38).float()
        norm[s:s + step] = nb
    zero = int((norm == 0).sum())
    if zero and warn_zero:
        log.warning("%s: %d of %d items have a zero-norm feature row; they get no kNN "
                    "neighbours and are nobody's neighbour", where, zero, x.size(0))
    return x, norm


def check_k(k: int, n: int, name: str) -> None:
    """Refuse a kNN size ``k`` that is not a positive integer below the item count ``n``
    (the message names the modality ``name``)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r} (modality '{name}')")
    if k >= n:
        raise ValueError(f"k={k} must be smaller than the number of items ({n}) "
                         f"(modality '{name}')")


def _order_rows(score: Tensor, index: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    r"""Per row of ``[R, c]`` candidates: sort by ``(score desc, index asc)``, keep ``k``.

    Entries with ``score = -inf`` are invalid and come out as index ``-1``. ``c`` may be
    smaller than ``k`` (output is padded)."""
    idx_sorted, perm = index.sort(dim=1)               # index asc ...
    sc = score.gather(1, perm)
    sc, perm2 = sc.sort(dim=1, descending=True, stable=True)  # ... then score desc, stably
    idx = idx_sorted.gather(1, perm2)
    R = score.size(0)
    out_i = torch.full((R, k), -1, dtype=torch.long, device=score.device)
    out_s = torch.zeros((R, k), dtype=torch.float32, device=score.device)
    m = min(k, sc.size(1))
    ok = torch.isfinite(sc[:, :m])
    out_i[:, :m] = torch.where(ok, idx[:, :m], torch.full_like(idx[:, :m], -1))
    out_s[:, :m] = torch.where(ok, sc[:, :m], torch.zeros_like(sc[:, :m])).float()
    return out_i, out_s


def _exact_block(scores: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    r"""Deterministic top-``k`` of a ``[B, I]`` score block (``-inf`` = excluded).

    Every entry scoring at least the ``k``-th value is gathered (so all ties at the
    boundary are seen), then ordered by ``(score desc, item id asc)``."""
    B, n = scores.shape
    kth = scores.topk(k, dim=1, sorted=False).values.min(dim=1, keepdim=True).values
    # a row with fewer than k valid items has kth = -inf: the lowest finite value excludes them
    kth.clamp_(min=torch.finfo(scores.dtype).min)
    keep = scores >= kth
    rows, cols = keep.nonzero(as_tuple=True)            # row-major, item id ascending
    vals = scores[rows, cols]
    vals, p = vals.sort(descending=True, stable=True)
    rows, cols = rows[p], cols[p]
    rows, p = rows.sort(stable=True)                    # (row asc, score desc, id asc)
    cols, vals = cols[p], vals[p]
    count = torch.bincount(rows, minlength=B)
    start = torch.cumsum(count, 0) - count
    rank = torch.arange(rows.numel(), device=scores.device) - start[rows]
    sel = rank < k
    out_i = torch.full((B, k), -1, dtype=torch.long, device=scores.device)
    out_s = torch.zeros((B, k), dtype=torch.float32, device=scores.device)
    out_i[rows[sel], rank[sel]] = cols[sel]
    out_s[rows[sel], rank[sel]] = vals[sel].float()
    return out_i, out_s


def _default_device(device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def _torch_exact(x: Tensor, norm: Tensor, k: int, queries: Optional[Tensor] = None,
                 chunk_size: Optional[int] = None, device=None, desc: str = "kNN",
                 progress: bool = False) -> Tuple[Tensor, Tensor]:
    """Exact top-``k`` of ``queries`` (default: all rows) against all rows, chunked."""
    dev = _default_device(device)
    n = x.size(0)
    valid = norm > 0
    inv = torch.where(valid, 1.0 / norm.clamp_min(1e-30), torch.zeros_like(norm))
    xn = (x * inv.unsqueeze(1)).to(dev)
    bias = torch.where(valid, 0.0, float("-inf")).to(dev)       # invalid columns never win
    q_ids = torch.arange(n) if queries is None else queries.cpu().long()
    nq = q_ids.numel()
    if chunk_size is None:
        chunk_size = max(1, min(nq, (1 << 26) // max(1, n)))     # <= 256 MB of scores
    out_i = torch.full((nq, k), -1, dtype=torch.long)
    out_s = torch.zeros((nq, k), dtype=torch.float32)
    buf = torch.empty((chunk_size, n), dtype=torch.float32, device=dev)  # reused: no page faults
    with tqdm(total=nq, desc=desc, unit="item", disable=not progress, leave=False) as bar:
        for s in range(0, nq, chunk_size):
            ids = q_ids[s:s + chunk_size]
            b = ids.numel()
            sc = buf[:b]
            torch.mm(xn[ids.to(dev)], xn.t(), out=sc)
            sc.add_(bias)
            sc[torch.arange(b, device=dev), ids.to(dev)] = float("-inf")   # no self-match
            bad = (~valid[ids]).to(dev)
            if bool(bad.any()):
                sc[bad] = float("-inf")                                    # zero-norm queries
            qi, qs = _exact_block(sc, k)
            out_i[s:s + b] = qi.cpu()
            out_s[s:s + b] = qs.cpu()
            bar.update(b)
    return out_i, out_s


# ----------------------------------------------------------------------------- FAISS
def _faiss():
    try:
        import faiss  # noqa: F401
    except ImportError as e:  # pragma: no cover - faiss-cpu is a declared dependency
        raise ImportError("the FAISS kNN backends need faiss-cpu (or faiss-gpu)") from e
    return faiss


def _to_gpu(index):
    faiss = _faiss()
    if faiss.get_num_gpus() > 0:  # pragma: no cover - no GPU FAISS in CI
        return faiss.index_cpu_to_all_gpus(index)
    return index


def _pca_basis(x: Tensor, inv: Tensor, valid_ids: Tensor, p: int, sample: int,
               seed: int) -> Tensor:
    r"""``[d, p]`` top right-singular vectors of a seeded sample of normalised rows
    (uncentred: the best rank-``p`` approximation of their inner products), by a seeded
    randomised range finder with two power iterations."""
    g = torch.Generator().manual_seed(int(seed))
    m = min(int(sample), valid_ids.numel())
    rows = valid_ids[torch.randperm(valid_ids.numel(), generator=g)[:m]].sort().values
    A = x[rows] * inv[rows].unsqueeze(1)                       # [m, d]
    q = min(p + 16, A.size(1), m)
    Y = A @ torch.randn(A.size(1), q, generator=g)
    for _ in range(2):
        Y = torch.linalg.qr(Y).Q
        Y = A @ (A.t() @ Y)
    Q = torch.linalg.qr(Y).Q                                   # [m, q]
    _, _, Vh = torch.linalg.svd(Q.t() @ A, full_matrices=False)
    return Vh[:p].t().contiguous()                             # [d, p]


def _nlist(ann: ANNParams, n: int) -> int:
    """Inverted lists of ``faiss-ivf``: ``ann.nlist``, at most one per 39 items."""
    return max(1, min(ann.nlist, n // 39))


def _coarse_index(backend: str, dim: int, ann: ANNParams, n_train: int):
    faiss = _faiss()
    if backend in ("faiss", "faiss-pca"):
        return _to_gpu(faiss.IndexFlatIP(dim))
    if backend == "faiss-ivf":
        nlist = _nlist(ann, n_train)
        quant = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quant, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = int(ann.seed)
        index.nprobe = min(ann.nprobe, nlist)
        return _to_gpu(index)
    if backend == "faiss-hnsw":
        index = faiss.IndexHNSWFlat(dim, ann.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ann.ef_construction
        return index
    raise ValueError(f"not a FAISS backend: '{backend}'")


@torch.no_grad()
def _faiss_search(x: Tensor, norm: Tensor, k: int, backend: str, ann: ANNParams,
                  chunk_size: Optional[int], desc: str, progress: bool) -> Tuple[Tensor, Tensor]:
    faiss = _faiss()
    n, d = x.shape
    valid = norm > 0
    valid_ids = valid.nonzero().view(-1)
    inv = torch.where(valid, 1.0 / norm.clamp_min(1e-30), torch.zeros_like(norm))
    out_i = torch.full((n, k), -1, dtype=torch.long)
    out_s = torch.zeros((n, k), dtype=torch.float32)
    nv = valid_ids.numel()
    if nv < 2:
        return out_i, out_s
    exact = backend == "faiss"
    reduce = None if exact or ann.reduce_dim is None or ann.reduce_dim >= d else int(ann.reduce_dim)
    basis = None if reduce is None else _pca_basis(x, inv, valid_ids, reduce, ann.pca_sample, ann.seed)
    step = max(1, (1 << 24) // max(1, d))

    def project(ids: Tensor) -> Tensor:      # [len(ids), d or p] normalised (and projected) rows
        z = x[ids] * inv[ids].unsqueeze(1)
        return z if basis is None else z @ basis

    # the projected rows are small ([n, p]): computed once; full-size rows chunk by chunk
    z_all = None
    if basis is not None:
        z_all = torch.cat([project(valid_ids[s:s + step]) for s in range(0, nv, step)])

    def embed(pos: Tensor) -> np.ndarray:  # rows ``valid_ids[pos]``
        z = z_all[pos] if z_all is not None else project(valid_ids[pos])
        return np.ascontiguousarray(z.numpy(), dtype=np.float32)

    dim = d if basis is None else basis.size(1)
    index = _coarse_index(backend, dim, ann, nv)
    if backend == "faiss-ivf":
        g = torch.Generator().manual_seed(int(ann.seed))
        n_tr = min(nv, 64 * _nlist(ann, nv))
        index.train(embed(torch.randperm(nv, generator=g)[:n_tr].sort().values))
    for s in range(0, nv, step):
        index.add(embed(torch.arange(s, min(nv, s + step))))
    # exact: a margin of candidates, so that ties at the k-th place resolve to smaller ids
    want = k + TIE_MARGIN if exact else max(k, int(math.ceil(ann.refine_factor * k)))
    c = min(nv - 1, want)
    c1 = min(nv, c + 1)                                      # + the item itself
    if backend == "faiss-hnsw":
        index.hnsw.efSearch = max(ann.ef_search, c1)
    xfull = x.numpy()
    if chunk_size is None:
        chunk_size = 4096
    with tqdm(total=nv, desc=desc, unit="item", disable=not progress, leave=False) as bar:
        for s in range(0, nv, chunk_size):
            q = valid_ids[s:s + chunk_size]
            b = q.numel()
            D, I = index.search(embed(torch.arange(s, s + b)), c1)
            cand = torch.from_numpy(I).long()                 # positions in valid_ids
            miss = cand < 0
            cand = valid_ids[cand.clamp_min(0)]
            cand[miss] = q.unsqueeze(1).expand_as(cand)[miss]  # placeholder, masked below
            if exact:
                sc = torch.from_numpy(D).float()
            else:  # exact re-scoring of the candidates in the full space
                xq = np.ascontiguousarray(x[q].numpy())
                ip = np.empty((b, c1), dtype=np.float32)
                ids64 = np.ascontiguousarray(cand.numpy())
                faiss.fvec_inner_products_by_idx(
                    faiss.swig_ptr(ip), faiss.swig_ptr(xq),
                    faiss.swig_ptr(xfull), faiss.swig_ptr(ids64),
                    d, b, c1)
                sc = torch.from_numpy(ip) * inv[q].unsqueeze(1) * inv[cand]
            sc = sc.masked_fill(miss | (cand == q.unsqueeze(1)), float("-inf"))
            qi, qs = _order_rows(sc, cand, k)
            out_i[q] = qi
            out_s[q] = qs
            bar.update(b)
    return out_i, out_s


# ----------------------------------------------------------------------------- public API
def knn_search(x: Tensor, k: int, backend: str = "auto", ann: Optional[ANNParams] = None,
               chunk_size: Optional[int] = None, device=None, name: str = "features",
               progress: bool = True, exact_limit: float = EXACT_LIMIT) -> Tuple[Tensor, Tensor]:
    r"""Top-``k`` cosine neighbours of every row of ``x`` (Eq. 1; conventions in the
    module docstring).

    Args:
        x: ``[I, d]`` item features of one modality.
        k: neighbours per item, ``1 <= k < I``.
        backend: one of :data:`BACKENDS`.
        ann: settings of the approximate backends (:class:`ANNParams` defaults).
        chunk_size: query rows per step (default: ``[chunk, I]`` scores <= 256 MB for
            ``torch``, 4096 for FAISS) -- memory is bounded by it, not by ``I``.
        device: device of the ``torch`` backend (default: CUDA when available).
        name: modality name, used in errors, logs and the progress bar.

    Returns:
        ``(index [I, k] long, score [I, k] float32)``, each row ordered by
        ``(score desc, index asc)``; missing neighbours are ``index = -1, score = 0``.
    """
    x, norm = check_features(x, name)
    return _search(x, norm, k, backend, ann, chunk_size, device, name, progress, exact_limit)


def _search(x: Tensor, norm: Tensor, k: int, backend: str, ann: Optional[ANNParams],
            chunk_size: Optional[int], device, name: str, progress: bool,
            exact_limit: float) -> Tuple[Tensor, Tensor]:
    """:func:`knn_search` on features already checked by :func:`check_features`."""
    n = x.size(0)
    check_k(k, n, name)
    ann = ann or ANNParams()
    be = resolve_backend(backend, n, x.size(1), exact_limit)
    desc = f"kNN {name} ({be})"
    log.info("kNN %s: %d items x %d dims, k=%d, backend %s", name, n, x.size(1), k, be)
    if be == "torch":
        return _torch_exact(x, norm, k, chunk_size=chunk_size, device=device, desc=desc,
                            progress=progress)
    return _faiss_search(x, norm, k, be, ann, chunk_size, desc, progress)


def knn_to_sparse(index: Tensor, score: Tensor, num_items: Optional[int] = None) -> Tensor:
    r"""``[I, I]`` coalesced sparse COO matrix :math:`S^m` with ``S[i, j] = s^m_{ij}`` for
    ``j`` in ``index[i]`` (``-1`` entries dropped)."""
    n = index.size(0) if num_items is None else int(num_items)
    row = torch.arange(index.size(0)).unsqueeze(1).expand_as(index)
    ok = index >= 0
    ei = torch.stack([row[ok], index[ok]])
    return torch.sparse_coo_tensor(ei, score[ok].float(), (n, n), check_invariants=False).coalesce()


def item_knn(x: Tensor, k: int, backend: str = "auto", ann: Optional[ANNParams] = None,
             chunk_size: Optional[int] = None, device=None, name: str = "features",
             progress: bool = True) -> Tensor:
    r"""Sparse ``[I, I]`` top-``k`` cosine similarity matrix of one modality (Eq. 1);
    see :func:`knn_search` for the arguments."""
    index, score = knn_search(x, k, backend, ann, chunk_size, device, name, progress)
    return knn_to_sparse(index, score, x.size(0))


@torch.no_grad()
def knn_recall(x: Tensor, index: Tensor, sample: int = 2000, seed: int = 0,
               device=None, name: str = "features") -> float:
    r"""Mean top-``k`` neighbour recall of ``index [I, k]`` against exact search, on a
    seeded sample of ``sample`` items with at least one valid neighbour:
    :math:`\frac{1}{|Q|}\sum_{i \in Q} |\hat{\mathcal N}(i) \cap \mathcal N(i)| / |\mathcal N(i)|`."""
    x, norm = check_features(x, name, warn_zero=False)
    return _recall(x, norm, index, sample, seed, device)


def _recall(x: Tensor, norm: Tensor, index: Tensor, sample: int, seed: int, device) -> float:
    n, k = index.shape
    ok_rows = (norm > 0).nonzero().view(-1)
    g = torch.Generator().manual_seed(int(seed))
    q = ok_rows[torch.randperm(ok_rows.numel(), generator=g)[:sample]].sort().values
    if q.numel() == 0:
        return 1.0
    exact, _ = _torch_exact(x, norm, k, queries=q, device=device)
    approx = index[q]
    hit = ((approx.unsqueeze(2) == exact.unsqueeze(1)) & (exact.unsqueeze(1) >= 0)).any(1)
    size = (exact >= 0).sum(1)
    keep = size > 0
    hits = (hit & (exact >= 0)).sum(1)
    return float((hits[keep].double() / size[keep].double()).mean()) if bool(keep.any()) else 1.0


# ----------------------------------------------------------------------------- dataset level
class KNNGraph(NamedTuple):
    """Top-``k`` lists of one modality: ``index``/``score`` ``[I, k]`` (see
    :func:`knn_search`), the concrete ``backend`` and, for approximate backends, the
    measured ``recall`` (``None`` when exact or not measured)."""
    index: Tensor
    score: Tensor
    backend: str
    recall: Optional[float]

    def to_sparse(self) -> Tensor:
        """``[I, I]`` sparse :math:`S^m` (values = cosine)."""
        return knn_to_sparse(self.index, self.score, self.index.size(0))


def _device_tag(backend: str, device) -> Optional[str]:
    return _default_device(device).type if backend == "torch" else None


def knn_cache_key(x: Tensor, k: int, backend: str, ann: Optional[ANNParams] = None,
                  device=None) -> str:
    """Digest of everything the kNN lists of ``x`` depend on (``backend`` concrete)."""
    ann_part = asdict(ann or ANNParams()) if backend in APPROXIMATE else None
    return digest("knn", x, int(k), backend, ann_part, _device_tag(backend, device))


def resolve_backend_for(x: Tensor, backend: str, exact_limit: float = EXACT_LIMIT) -> str:
    """:func:`resolve_backend` for the feature matrix ``x`` (``[N, d]``)."""
    return resolve_backend(backend, x.size(0), x.size(1) if x.dim() == 2 else 0, exact_limit)


def build_item_knn(data: HeteroData, k: int, backend: str = "auto",
                   ann: Optional[ANNParams] = None,
                   cache_dir: Optional[Union[str, Path]] = None,
                   modalities: Optional[Sequence[str]] = None, recall_sample: int = 2000,
                   device=None, progress: bool = True,
                   exact_limit: float = EXACT_LIMIT) -> Dict[str, KNNGraph]:
    r"""Top-``k`` cosine neighbours of every item under each content modality of ``data``
    (Eq. 1), cached on disk when ``cache_dir`` is given (:mod:`.cache`).

    Args:
        data: a dataset in the layout of :mod:`magnet_pyg.data.schema`.
        k: neighbours per item and modality, ``1 <= k < I``.
        backend, ann, device, exact_limit: see :func:`knn_search` / :func:`resolve_backend`.
        cache_dir: folder of the cache (``None``: no caching).
        modalities: which modalities (default: all of ``data.modalities``, in order).
        recall_sample: items on which the recall of an approximate backend is measured
            against exact search and logged (``0``: not measured).

    Returns:
        ``{modality: KNNGraph}`` in modality order.
    """
    feats = checked_modalities(data, modalities)
    for name in feats:
        check_k(k, num_items(data), name)
    return knn_graphs(feats, k, backend, ann, cache_dir, recall_sample, device, progress,
                      exact_limit)


def checked_modalities(data: HeteroData, modalities: Optional[Sequence[str]] = None
                       ) -> Dict[str, Tuple[Tensor, Tensor]]:
    """``{name: (x, norm)}`` of the requested modalities, validated by
    :func:`check_features` against the item count (errors name modality and file)."""
    names = list(modalities) if modalities is not None else modality_names(data)
    if not names:
        raise ValueError("the dataset has no content modality (data.modalities is empty): "
                         "item kNN needs item features")
    n = num_items(data)
    files = getattr(data, "modality_files", None) or {}
    feats = modality_features(data)
    out = {}
    for name in names:
        if name not in feats:
            raise ValueError(f"modality '{name}' not found: the data has the modalities {list(feats)}")
        out[name] = check_features(feats[name], name, n,
                                   str(files[name]) if name in files else None)
    return out


def knn_graphs(feats: Dict[str, Tuple[Tensor, Tensor]], k: int, backend: str = "auto",
               ann: Optional[ANNParams] = None, cache_dir: Optional[Union[str, Path]] = None,
               recall_sample: int = 2000, device=None, progress: bool = True,
               exact_limit: float = EXACT_LIMIT) -> Dict[str, KNNGraph]:
    """:class:`KNNGraph` per modality of already validated ``{name: (x, norm)}`` features
    (:func:`checked_modalities`), loaded from or written to the cache under ``cache_dir``; the
    arguments are those of :func:`build_item_knn`."""
    out: Dict[str, KNNGraph] = {}
    for name, (x, norm) in feats.items():
        n = x.size(0)
        be = resolve_backend_for(x, backend, exact_limit)
        path = None
        if cache_dir is not None:
            path = cache_file(cache_dir, f"knn-{name}", knn_cache_key(x, k, be, ann, device))
            hit = load_cached(path)
            if hit is not None:
                out[name] = KNNGraph(hit["index"], hit["score"], hit["backend"], hit["recall"])
                continue
        index, score = _search(x, norm, k, be, ann, None, device, name, progress, exact_limit)
        recall = None
        if be in APPROXIMATE and recall_sample > 0:
            recall = _recall(x, norm, index, recall_sample, (ann or ANNParams()).seed, device)
            log.info("kNN %s: %s top-%d recall vs exact search = %.4f (%d sampled items)",
                     name, be, k, recall, min(recall_sample, n))
        out[name] = KNNGraph(index, score, be, recall)
        if path is not None:
            save_atomic({"index": index, "score": score, "backend": be, "recall": recall,
                         "k": int(k)}, path)
    return out
