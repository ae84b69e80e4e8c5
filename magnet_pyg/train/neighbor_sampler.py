r"""Vectorised heterogeneous neighbour sampling, draw for draw the sampling of PyG's
:class:`~torch_geometric.sampler.NeighborSampler` over the ``torch-sparse`` backend
(``torch.ops.torch_sparse.hetero_neighbor_sample``: ``directional`` subgraphs, no replacement,
not disjoint).

The C++ routine inserts every sampled neighbour into a hash map and draws every neighbour
index with its own one-element ``torch.randint`` call, which makes it the slowest part of a
sampled training step on large graphs. :class:`HeteroNeighborSampler` does the same work with
a few tensor operations per hop and relation and returns the **same** subgraph: the same
nodes in the same order, the same edges in the same order, and it consumes the same random
numbers of PyTorch's default CPU generator, so that results do not depend on which of the two
sampled them. Its semantics, per hop :math:`\ell` with fanout :math:`F_\ell`:

* relations are visited in the lexicographic order of ``"src__rel__dst"``; a relation
  samples for the nodes of its destination type added in the previous hop (the seeds at hop
  0), in the order they were added;
* a node with at most :math:`F_\ell` in-neighbours through the relation (or
  :math:`F_\ell = -1`) keeps all of them, in CSC order (PyG's
  :func:`~torch_geometric.sampler.utils.to_hetero_csc`);
* a node with :math:`c > F_\ell` in-neighbours draws :math:`F_\ell` distinct CSC positions
  with Floyd's algorithm: for :math:`j = c - F_\ell, \dots, c - 1`, :math:`t` is the next
  32-bit output of the generator modulo :math:`j` (``torch.randint(0, j)``), and :math:`j`
  replaces :math:`t` when :math:`t` was drawn before. As in ``torch-sparse``, :math:`t` is
  drawn from :math:`[0, j)` rather than :math:`[0, j]`: the draw is without replacement but
  not exactly uniform (the last CSC position is kept only through a collision, the first one
  always when :math:`c = F_\ell + 1`);
* a sampled source node gets the next local index of its type the first time it appears.

The 32-bit outputs are those of PyTorch's Mersenne Twister, generated in bulk by NumPy's
:class:`numpy.random.MT19937` from the generator's state; the same number of outputs is then
consumed from the generator (:func:`default_generator_draws`), which checks both against each
other.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

__all__ = ["HeteroNeighborSampler", "default_generator_draws", "floyd_positions"]

EdgeType = Tuple[str, str, str]

# layout of torch.get_rng_state() (CPUGeneratorImplState): int64 seed, int32 left, int32 seeded,
# uint64 next, uint64 state[624], ...
_MT_N = 624
_LEFT = slice(8, 12)
_STATE = slice(24, 24 + 8 * _MT_N)
_UNSET = torch.iinfo(torch.long).max


def default_generator_draws(n: int) -> Tensor:
    """The next ``n`` 32-bit outputs of PyTorch's default CPU generator, as ``int64``, consumed
    from it: what ``n`` successive one-element ``torch.randint(0, j, (1,))`` calls draw (their
    results are these values modulo ``j``).

    Raises:
        RuntimeError: when the generator's state cannot be read as a Mersenne Twister (a
            PyTorch whose generator state has another layout).
    """
    if n <= 0:
        return torch.zeros(0, dtype=torch.long)
    state = torch.get_rng_state().numpy()
    left = int(state[_LEFT].view(np.int32)[0])
    bitgen = np.random.MT19937()
    st = bitgen.state
    st["state"] = {"key": state[_STATE].view(np.uint64).astype(np.uint32), "pos": _MT_N + 1 - left}
    bitgen.state = st
    raw = torch.from_numpy(bitgen.random_raw(n).astype(np.int64))
    # consume the same outputs from the generator (one each, their low 31 bits) and compare
    low = torch.empty(n, dtype=torch.int32).random_()
    if not torch.equal(low.long(), raw & 0x7FFFFFFF):
        raise RuntimeError("cannot reproduce the draws of PyTorch's default CPU generator (its "
                           "state layout is not the Mersenne Twister one this sampler reads)")
    return raw


def floyd_positions(count: Tensor, num: int, draws: Tensor) -> Tensor:
    """``[m, num]`` distinct positions in ``0..count-1`` per row (``count > num``), drawn as
    ``torch-sparse`` does (see the module docstring) from ``draws`` ``[m, num]`` 32-bit values."""
    j = count.view(-1, 1) - num + torch.arange(num)
    sel = draws % j
    for k in range(1, num):
        seen = (sel[:, :k] == sel[:, k:k + 1]).any(1)
        sel[:, k] = torch.where(seen, j[:, k], sel[:, k])
    return sel


class HeteroNeighborSampler:
    r"""Samples ``directional`` ``L``-hop subgraphs of a :class:`HeteroData` (see the module
    docstring), the subgraphs of ``torch-sparse``'s ``hetero_neighbor_sample``.

    Args:
        data: the graph; ``edge_index`` per edge type and ``num_nodes`` per node type.
        num_neighbors: fanout per hop (``-1`` = all), the same for every relation.
        share_memory: move the CSC tensors to shared memory (for loader worker processes).

    One instance samples one subgraph at a time (it keeps per-node scratch maps between
    calls): give every thread its own; loader worker processes each have their own copy.
    """

    def __init__(self, data: HeteroData, num_neighbors: Sequence[int], share_memory: bool = False):
        from torch_geometric.sampler.utils import to_hetero_csc
        self.num_neighbors = [int(f) for f in num_neighbors]
        self.num_nodes = {t: int(data[t].num_nodes) for t in data.node_types}
        colptr, row, _ = to_hetero_csc(data, device="cpu", share_memory=share_memory)
        self.colptr: Dict[EdgeType, Tensor] = colptr
        self.row: Dict[EdgeType, Tensor] = row
        self.edge_types: List[EdgeType] = sorted(colptr, key=lambda et: "__".join(et))
        # scratch per node type: local index of each sampled node (-1: not sampled yet)
        self._local = {t: torch.full((n,), -1, dtype=torch.long) for t, n in self.num_nodes.items()}
        self._first = {t: torch.full((n,), _UNSET, dtype=torch.long) for t, n in self.num_nodes.items()}

    def sample(self, seeds: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[EdgeType, Tensor]]:
        """Sample the subgraph of ``seeds`` (``{node type: [n] distinct node ids}``).

        Returns:
            ``{node type: [N_t] node ids}`` (the seeds first, then the sampled nodes in the
            order they were added) and ``{edge type: [2, E] local (source, destination)}``
            (in the order they were sampled).
        """
        nodes: Dict[str, List[Tensor]] = {t: [] for t in self.num_nodes}
        size = {t: 0 for t in self.num_nodes}
        frontier: Dict[str, Tensor] = {}
        for t in self.num_nodes:
            s = seeds.get(t, torch.zeros(0, dtype=torch.long)).long()
            self._add(t, s, nodes, size)
            frontier[t] = s
        rows: Dict[EdgeType, List[Tensor]] = {et: [] for et in self.edge_types}
        cols: Dict[EdgeType, List[Tensor]] = {et: [] for et in self.edge_types}
        try:
            for fanout in self.num_neighbors:
                begin = {t: size[t] - frontier[t].numel() for t in self.num_nodes}
                chunks = {t: len(nodes[t]) for t in self.num_nodes}
                for et in self.edge_types:
                    src_t, dst_t = et[0], et[2]
                    w = frontier[dst_t]
                    if w.numel() == 0:
                        continue
                    src, dst = self._neighbors(et, w, fanout)
                    self._add(src_t, src, nodes, size)
                    rows[et].append(self._local[src_t][src])
                    cols[et].append(begin[dst_t] + dst)
                frontier = {t: torch.cat(nodes[t][chunks[t]:]) if len(nodes[t]) > chunks[t]
                            else torch.zeros(0, dtype=torch.long) for t in self.num_nodes}
        finally:
            out_nodes = {t: torch.cat(nodes[t]) if nodes[t] else torch.zeros(0, dtype=torch.long)
                         for t in self.num_nodes}
            for t, n_id in out_nodes.items():
                self._local[t][n_id] = -1
        edges = {}
        for et in self.edge_types:
            if rows[et]:
                edges[et] = torch.stack([torch.cat(rows[et]), torch.cat(cols[et])])
            else:
                edges[et] = torch.zeros(2, 0, dtype=torch.long)
        return out_nodes, edges

    def _neighbors(self, et: EdgeType, w: Tensor, fanout: int) -> Tuple[Tensor, Tensor]:
        """Global source ids and frontier positions of the sampled in-edges of ``w``."""
        colptr, row = self.colptr[et], self.row[et]
        start = colptr[w]
        count = colptr[w + 1] - start
        k = count if fanout < 0 else count.clamp(max=fanout)
        dst = torch.repeat_interleave(torch.arange(w.numel()), k)
        first = torch.cumsum(k, 0) - k
        offset = torch.arange(dst.numel()) - first[dst] + start[dst]
        if fanout >= 0:
            draw = (count > fanout).nonzero().view(-1)
            if draw.numel():
                raw = default_generator_draws(draw.numel() * fanout).view(-1, fanout)
                pos = floyd_positions(count[draw], fanout, raw)
                at = (first[draw].view(-1, 1) + torch.arange(fanout)).view(-1)
                offset[at] = (start[draw].view(-1, 1) + pos).view(-1)
        return row[offset], dst

    def _add(self, t: str, v: Tensor, nodes: Dict[str, List[Tensor]], size: Dict[str, int]) -> None:
        """Give the nodes of ``v`` not sampled yet the next local indices of type ``t``, in the
        order of their first occurrence."""
        if v.numel() == 0:
            return
        local = self._local[t]
        v = v[local[v] < 0]
        if v.numel() == 0:
            return
        pos = torch.arange(v.numel())
        first = self._first[t]
        first.scatter_reduce_(0, v, pos, reduce="amin")
        new = v[first[v] == pos]
        first[v] = _UNSET
        local[new] = torch.arange(size[t], size[t] + new.numel())
        nodes[t].append(new)
        size[t] += new.numel()
