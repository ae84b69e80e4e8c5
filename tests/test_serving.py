"""A finished run of any model is loaded back, recommends as the evaluator ranks, and exports."""
import numpy as np
import pytest
import torch

import magnet_pyg
from magnet_pyg.cli import main
from magnet_pyg.data import num_items, num_users, split_edge_index
from magnet_pyg.evaluate.ranking import CSRIndex

MODELS = ["bpr", "lightgcn", "magnet", "freedom", "anchorrec", "crane", "recgoat"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    out = {}
    for name in MODELS:
        d = root / name
        args = ["train", "--model", name, "--data", "synthetic-tiny", "--epochs", "2", "--set", "embedding_dim=8",
                "--batch-size", "256", "--no-progress", "--threads", "1", "--out", str(d)]
        if name == "magnet":
            args += ["--graph-cache", ""]
        assert main(args) == 0, name
        out[name] = d
    return out


@pytest.mark.parametrize("name", MODELS)
def test_load_run_recommends_the_evaluators_top_20(runs, name):
    ctx = magnet_pyg.load_run(runs[name])
    assert ctx.results["model"] == name
    users = torch.arange(10)
    items, scores = ctx.recommend(users, k=20)
    assert items.shape == (10, 20) and (scores[:, :-1] >= scores[:, 1:]).all()
    # the evaluator's ranking: the model's full-ranking scores with training items masked
    train = CSRIndex(split_edge_index(ctx.data, "train"), num_users(ctx.data))
    ctx.model.eval()
    with torch.no_grad():
        s = ctx.model.score(ctx.state, users).float()
    r, c = train.gather(users)
    s[r, c] = float("-inf")
    assert torch.equal(items, s.topk(20, dim=1).indices)
    seen = set(map(tuple, split_edge_index(ctx.data, "train").t().tolist()))
    assert not any((u, i) in seen for u in range(10) for i in items[u].tolist())
    # the best.pt weights were loaded: the run's test metric is reproduced
    res = ctx.results["test"]["ndcg@20"]
    from magnet_pyg.evaluate import Evaluator
    again = Evaluator(ctx.data, (10, 20, 50)).evaluate(ctx.model, ctx.graph, "test")["ndcg@20"]
    assert again == pytest.approx(res, abs=1e-6)


@pytest.mark.parametrize("name", ["lightgcn", "magnet"])
def test_recommend_and_export_cli(runs, name, capsys, tmp_path):
    assert main(["recommend", "--run", str(runs[name]), "--user", "3", "5", "--k", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("user 3: ") and len(lines[0].split()) == 2 + 5
    assert main(["export", "--run", str(runs[name]), "--out", str(tmp_path)]) == 0
    ctx = magnet_pyg.load_run(runs[name])
    U, I = num_users(ctx.data), num_items(ctx.data)
    user, item = np.load(tmp_path / "user.npy"), np.load(tmp_path / "item.npy")
    assert user.shape[0] == U and item.shape[0] == I and user.shape[1] == item.shape[1]
    if name == "magnet":
        assert np.load(tmp_path / "user_cues.npy").shape[:2] == (U, 2)
        assert np.load(tmp_path / "item_cues.npy").shape[:2] == (I, 2)
    else:   # the exported inner product is the model's score
        got = torch.from_numpy(user[:4] @ item.T)
        assert torch.allclose(got, ctx.model.score(ctx.state, torch.arange(4)), atol=1e-5)


def test_recommend_refuses_unknown_users_and_bad_k(runs, capsys):
    ctx = magnet_pyg.load_run(runs["bpr"])
    with pytest.raises(ValueError, match="not in the run's dataset"):
        ctx.recommend([10 ** 6])
    with pytest.raises(ValueError, match="k must be"):
        ctx.recommend([0], k=0)
    assert main(["report", "--run", str(runs["bpr"])]) == 2
    assert "needs a MAGNET run" in capsys.readouterr().err
