import math

import pytest
import torch
from torch_geometric.metrics import LinkPredHitRatio, LinkPredNDCG, LinkPredPrecision, LinkPredRecall

from magnet_pyg.evaluate import CSRIndex, full_ranking


def random_problem(seed, n_users=60, n_items=40):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n_users, n_items, generator=g)
    r = torch.rand(n_users, n_items, generator=g)
    train = (r < 0.15).nonzero().t()
    target = ((r >= 0.15) & (r < 0.25)).nonzero().t()
    return scores, train, target


def brute_force(scores, train, target, k):
    n_users = scores.size(0)
    out = {"recall": [], "ndcg": [], "precision": [], "hit": []}
    tr = {u: set() for u in range(n_users)}
    te = {u: set() for u in range(n_users)}
    for u, i in train.t().tolist():
        tr[u].add(i)
    for u, i in target.t().tolist():
        te[u].add(i)
    for u in range(n_users):
        if not te[u]:
            continue
        ranked = sorted((i for i in range(scores.size(1)) if i not in tr[u]), key=lambda i: -scores[u, i].item())[:k]
        hits = [1.0 if i in te[u] else 0.0 for i in ranked]
        dcg = sum(h / math.log2(p + 2) for p, h in enumerate(hits))
        idcg = sum(1 / math.log2(p + 2) for p in range(min(k, len(te[u]))))
        out["recall"].append(sum(hits) / len(te[u]))
        out["ndcg"].append(dcg / idcg)
        out["precision"].append(sum(hits) / k)
        out["hit"].append(float(sum(hits) > 0))
    return {f"{m}@{k}": sum(v) / len(v) for m, v in out.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_and_pyg(seed):
    scores, train, target = random_problem(seed)
    n_users = scores.size(0)
    res = full_ranking(lambda u: scores[u].clone(), CSRIndex(target, n_users), [CSRIndex(train, n_users)],
                       ks=(5, 10, 20), batch_size=7)
    for k in (5, 10, 20):
        ref = brute_force(scores, train, target, k)
        for name, v in ref.items():
            assert res[name] == pytest.approx(v, abs=1e-12), name
        # PyG's link-prediction metrics on the same masked top-k lists
        masked = scores.clone()
        masked[train[0], train[1]] = float("-inf")
        users = torch.unique(target[0])
        top = masked[users].topk(k, dim=1).indices
        remap = torch.full((n_users,), -1, dtype=torch.long)
        remap[users] = torch.arange(users.numel())
        label = torch.stack([remap[target[0]], target[1]])
        for cls, name in ((LinkPredRecall, "recall"), (LinkPredNDCG, "ndcg"),
                          (LinkPredPrecision, "precision"), (LinkPredHitRatio, "hit")):
            m = cls(k)
            m.update(top, label)
            assert res[f"{name}@{k}"] == pytest.approx(float(m.compute()), abs=1e-6), (name, k)


def test_masks_training_items_and_extra_splits():
    scores = torch.tensor([[9.0, 8.0, 7.0, 1.0]])
    train = torch.tensor([[0], [0]])
    valid = torch.tensor([[0], [1]])
    target = torch.tensor([[0], [2]])
    res = full_ranking(lambda u: scores[u].clone(), CSRIndex(target, 1), [CSRIndex(train, 1)], ks=(1,))
    assert res["hit@1"] == 0.0  # item 1 (valid) ranks first when only training is masked
    res = full_ranking(lambda u: scores[u].clone(), CSRIndex(target, 1),
                       [CSRIndex(train, 1), CSRIndex(valid, 1)], ks=(1,))
    assert res["hit@1"] == 1.0 and res["ndcg@1"] == 1.0


def test_per_user_and_recall_definition():
    # 3 targets, K = 2: recall = hits / |targets| (not / min(K, |targets|))
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    target = torch.tensor([[0, 0, 0], [0, 1, 4]])
    res = full_ranking(lambda u: scores[u].clone(), CSRIndex(target, 1), [], ks=(2,), per_user=True)
    assert res["recall@2"] == pytest.approx(2 / 3)
    assert res["ndcg@2"] == pytest.approx(1.0)
    assert res["per_user"]["users"].tolist() == [0]
