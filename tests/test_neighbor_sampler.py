"""The vectorised heterogeneous neighbour sampler (magnet_pyg.train.neighbor_sampler) draws the
subgraphs of torch-sparse's hetero_neighbor_sample, draw for draw, from the same random stream."""
import pytest
import torch

from magnet_pyg.data import INDUCED, INDUCED_BY, num_items, num_users, split_edge_index, synthetic
from magnet_pyg.train import LinkSampler
from magnet_pyg.train.neighbor_sampler import (HeteroNeighborSampler, default_generator_draws,
                                               floyd_positions)
from magnet_pyg.train.sampled import SubgraphSampler, sampling_graph

try:
    import torch_sparse  # noqa: F401
    HAS_TORCH_SPARSE = hasattr(torch.ops.torch_sparse, "hetero_neighbor_sample")
except ImportError:
    HAS_TORCH_SPARSE = False

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def graph():
    d = synthetic("tiny", seed=0)
    g = torch.Generator().manual_seed(1)
    users = torch.arange(num_users(d)).repeat_interleave(12)
    ei = torch.stack([users, torch.randint(0, num_items(d), (users.numel(),), generator=g)])
    d[INDUCED].edge_index, d[INDUCED_BY].edge_index = ei, ei.flip(0)   # duplicates included
    return d, sampling_graph(d, ("ui", "uig"))


def test_draws_are_the_one_element_randint_draws():
    torch.manual_seed(3)
    torch.rand(1000)                                   # somewhere inside the stream
    start = torch.get_rng_state()
    raw = default_generator_draws(2500)                # crosses a Mersenne Twister refill
    after = torch.get_rng_state()
    torch.set_rng_state(start)
    j = torch.randint(1, 10 ** 6, (2500,), generator=torch.Generator().manual_seed(0))
    one_by_one = torch.tensor([int(torch.randint(0, int(k), (1,))) for k in j])
    assert torch.equal(raw % j, one_by_one)
    assert torch.equal(torch.get_rng_state(), after)
    assert int(raw.min()) >= 0 and int(raw.max()) < 2 ** 32
    torch.manual_seed(3)                               # a freshly seeded generator
    first = default_generator_draws(5)
    torch.manual_seed(3)
    assert torch.equal(first % 7, torch.tensor([int(torch.randint(0, 7, (1,))) for _ in range(5)]))
    assert default_generator_draws(0).numel() == 0


def test_floyd_positions_are_distinct_and_in_range():
    count = torch.tensor([3, 11, 50, 1000])
    draws = torch.randint(0, 2 ** 32, (4, 2), generator=torch.Generator().manual_seed(0))
    pos = floyd_positions(count, 2, draws)
    assert bool((pos >= 0).all()) and bool((pos < count.view(-1, 1)).all())
    assert bool((pos[:, 0] != pos[:, 1]).all())
    # as in torch-sparse, t is drawn from [0, j): with c = F + 1 the first position is always kept
    draws = torch.randint(0, 2 ** 32, (200, 10), generator=torch.Generator().manual_seed(1))
    pos = floyd_positions(torch.full((200,), 11), 10, draws)
    assert bool((pos == 0).any(1).all())
    srt = pos.sort(1).values
    assert bool((srt[:, 1:] > srt[:, :-1]).all())                      # distinct


@pytest.mark.skipif(not HAS_TORCH_SPARSE, reason="the reference sampler is torch-sparse's")
@pytest.mark.parametrize("fanout", [[2, 2], [3, -1], [1, 2, 4], [-1, -1], [50, 50]])
def test_same_subgraph_and_random_stream_as_torch_sparse(graph, fanout):
    from torch_geometric.sampler import NeighborSampler
    d, g = graph
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = NeighborSampler(g, num_neighbors=fanout)
    new = HeteroNeighborSampler(g, fanout)
    gen = torch.Generator().manual_seed(0)
    for rep in range(4):
        seeds = {"user": torch.randint(0, num_users(d), (30,), generator=gen).unique(),
                 "item": torch.randint(0, num_items(d), (40,), generator=gen).unique()}
        torch.manual_seed(rep)
        node, row, col, _ = torch.ops.torch_sparse.hetero_neighbor_sample(
            ref.node_types, ref.edge_types, ref.colptr_dict, ref.row_dict, seeds,
            ref.num_neighbors.get_mapped_values(ref.edge_types), ref.num_neighbors.num_hops, False, True)
        state = torch.get_rng_state()
        torch.manual_seed(rep)
        nodes, edges = new.sample(seeds)
        assert torch.equal(torch.get_rng_state(), state)
        for t in ("user", "item"):
            assert torch.equal(nodes[t], node[t])
        for et, ei in edges.items():
            key = "__".join(et)
            assert torch.equal(ei[0], row[key]) and torch.equal(ei[1], col[key])
    # the scratch maps are reset: the same seeds and stream give the same subgraph again
    torch.manual_seed(0)
    a = new.sample(seeds)
    torch.manual_seed(0)
    b = new.sample(seeds)
    assert all(torch.equal(a[0][t], b[0][t]) for t in a[0])


def test_subgraph_sampler_batch_holds_what_the_losses_read(graph):
    d, _ = graph
    u, p, n = next(LinkSampler(split_edge_index(d, "train"), num_items(d), 32).epoch(
        torch.Generator().manual_seed(0)))
    for rescale in (None, True, False):
        b = SubgraphSampler(d, [3, 3], ("ui", "uig"), rescale=rescale).sample(u, p, n)
        sub = b.subgraph
        assert torch.equal(sub["user"].n_id[b.users_local], u)
        assert torch.equal(sub["item"].n_id[b.pos_local], p) and torch.equal(sub["item"].n_id[b.neg_local], n)
        for t in ("user", "item"):
            assert sub[t].num_nodes == sub[t].n_id.numel()
            assert torch.equal(sub[t].deg_uig, d[t].deg_uig[sub[t].n_id])
        if rescale is None:
            assert b.plan is None
        else:
            U, I = num_users(d), num_items(d)
            assert b.plan.covers(("ui", "uig"), 2, rescale, U, I) and b.plan.covers(("ui",), 2, rescale, U, I)
            assert not b.plan.covers(("ui",), 2, not rescale, U, I)
            assert not b.plan.covers(("ui",), 3, rescale, U, I) and not b.plan.covers(("ui",), 2, rescale, U, I + 1)
            assert torch.equal(b.plan.seeds, torch.cat(b.seed_rows()).unique())
            assert torch.equal(b.plan.seed_ids, b.node_ids(U)[b.plan.seeds])
        u_i, p_i, n_i = b.seed_index()
        assert torch.equal(b.seeds()[u_i], b.users_local)
        assert torch.equal(b.seeds()[n_i], b.num_sub_users + b.neg_local)
