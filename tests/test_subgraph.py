"""Subgraph propagation helpers (magnet_pyg.nn.subgraph): the entry orders of the sparse
products and the order shared by the two views give bit-identical results."""
import pytest
import torch

from magnet_pyg.data import INDUCED, INDUCED_BY, num_items, num_users, split_edge_index, synthetic
from magnet_pyg.nn import DualViewEncoder
from magnet_pyg.nn.seed_propagation import encode_seeds
from magnet_pyg.nn.subgraph import (_layer_masks, encode_batch, propagate_batch, propagation_orders,
                                    view_subgraph)
from magnet_pyg.train import LinkSampler
from magnet_pyg.train.sampled import SubgraphSampler

from conftest import needs_sampler

pytestmark = pytest.mark.usefixtures("one_thread")


def test_propagation_orders_are_the_stable_lexicographic_orders():
    g = torch.Generator().manual_seed(0)
    n = 50
    ei = torch.randint(0, n, (2, 400), generator=g)
    ei = torch.cat([ei, ei[:, :40]], dim=1)                 # duplicate entries
    fwd, bwd = propagation_orders(ei, n)
    src, dst = ei
    for order, (a, b) in ((fwd, (dst, src)), (bwd, (src, dst))):
        key = a[order] * n + b[order]
        assert bool((key[1:] >= key[:-1]).all())           # sorted by (a, b)
        same = key[1:] == key[:-1]
        assert bool((order[1:][same] > order[:-1][same]).all())  # equal entries in index order
    assert torch.equal(fwd, torch.sort(dst * n + src, stable=True)[1])
    assert torch.equal(bwd, torch.sort(src * n + dst, stable=True)[1])


@needs_sampler
@pytest.mark.parametrize("fanout", [[2, 2], [-1, -1]])
def test_dual_view_shares_one_sort_bit_for_bit(fanout):
    d = synthetic("tiny", seed=0)
    g = torch.Generator().manual_seed(1)
    users = torch.arange(num_users(d)).repeat_interleave(4)
    ei = torch.unique(torch.stack([users, torch.randint(0, num_items(d), (users.numel(),), generator=g)]), dim=1)
    d[INDUCED].edge_index, d[INDUCED_BY].edge_index = ei, ei.flip(0)
    sampler = SubgraphSampler(d, fanout, ("ui", "uig"))
    u, p, n = next(LinkSampler(split_edge_index(d, "train"), num_items(d), 40).epoch(g))
    batch = sampler.sample(u, p, n)
    torch.manual_seed(0)
    enc = DualViewEncoder(num_users(d), num_items(d), 8, 2)
    (ei_ui, _), (ei_uig, _) = (view_subgraph(batch.subgraph, v) for v in ("ui", "uig"))
    assert torch.equal(ei_uig[:, :ei_ui.size(1)], ei_ui)     # the observed view is a prefix
    z, z_ui, z_uig = encode_batch(enc, batch, ("ui", "uig"))
    x0 = enc.embedding.weight[batch.node_ids(enc.num_users)]
    assert torch.equal(z_ui, propagate_batch(x0, batch, "ui", 2))
    assert torch.equal(z_uig, propagate_batch(x0, batch, "uig", 2))
    grads = []
    for shared in (True, False):
        enc.zero_grad()
        if shared:
            out = encode_batch(enc, batch, ("ui", "uig"))[0]
        else:
            x0 = enc.embedding.weight[batch.node_ids(enc.num_users)]
            out = 0.5 * (propagate_batch(x0, batch, "ui", 2) + propagate_batch(x0, batch, "uig", 2))
        (out * torch.arange(out.numel()).view_as(out).float().sin()).sum().backward()
        grads.append(enc.embedding.weight.grad.clone())
    assert torch.equal(grads[0], grads[1])
    # layer 1 of a sampled 2-hop subgraph needs every edge, layer 2 only the edges into seeds
    masks = _layer_masks(x0.size(0), ei_uig, batch.seeds(), 2)
    assert masks[0] is None
    assert torch.equal(masks[1], torch.isin(ei_uig[1], batch.seeds()))


@needs_sampler
@pytest.mark.parametrize("fanout,views", [([2, 2], ("ui", "uig")), ([-1, -1], ("ui", "uig")),
                                          ([3, 2], ("ui",)), ([2, 2, 2], ("ui", "uig"))])
def test_seed_propagation_is_encode_batch_on_the_seeds_bit_for_bit(fanout, views):
    d = synthetic("tiny", seed=0)
    g = torch.Generator().manual_seed(1)
    users = torch.arange(num_users(d)).repeat_interleave(4)
    ei = torch.unique(torch.stack([users, torch.randint(0, num_items(d), (users.numel(),), generator=g)]), dim=1)
    d[INDUCED].edge_index, d[INDUCED_BY].edge_index = ei, ei.flip(0)
    u, p, n = next(LinkSampler(split_edge_index(d, "train"), num_items(d), 40).epoch(g))
    torch.manual_seed(0)
    enc = DualViewEncoder(num_users(d), num_items(d), 8, len(fanout))
    for rescale in (True, False):
        torch.manual_seed(1)
        with_plan = SubgraphSampler(d, fanout, views, rescale=rescale).sample(u, p, n)
        assert with_plan.plan is not None
        torch.manual_seed(1)                                        # the same draws
        batch = SubgraphSampler(d, fanout, views).sample(u, p, n)   # no plan: built on the fly
        assert batch.plan is None and torch.equal(batch.seeds(), with_plan.seeds())
        seeds = batch.seeds()
        weights = [torch.arange(seeds.numel() * 8).view(-1, 8).float().sin() + k for k in range(3)]
        grads, outs = [], []
        for mode in ("full", "plan", "on the fly"):
            enc.zero_grad()
            if mode == "full":
                out = [None if z is None else z[seeds] for z in encode_batch(enc, batch, views, rescale)]
            else:
                out = encode_seeds(enc, with_plan if mode == "plan" else batch, views, rescale)
            sum((z * w).sum() for z, w in zip(out, weights) if z is not None).backward()
            outs.append(out)
            grads.append(enc.embedding.weight.grad.clone())
        for out in outs[1:]:
            assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(outs[0], out))
        assert torch.equal(grads[0], grads[1]) and torch.equal(grads[0], grads[2])
    zu, zp, zn = (z for z in (outs[1][0][r] for r in batch.seed_index()))
    full = encode_batch(enc, batch, views, False)[0]
    assert torch.equal(zu, full[batch.users_local]) and torch.equal(zn, full[batch.num_sub_users + batch.neg_local])
