"""The MAGNET model as a whole: presets, graph preparation, training-pair cues, exact scoring."""
import pytest
import torch

from magnet_pyg.data import INDUCED, synthetic, modality_features, num_items, num_users, split_edge_index
from magnet_pyg.graph import add_induced_edges
from magnet_pyg.models import MAGNET, MAGNET_PRESETS
from magnet_pyg.nn.adjacency import bipartite_normalized_adjacency


@pytest.fixture(scope="module")
def tiny_dv():
    return add_induced_edges(synthetic("tiny", seed=0), k=5, r=6, backend="torch", cache_dir=None,
                             progress=False)


def _dims(d):
    return {m: int(x.size(1)) for m, x in modality_features(d).items()}


def test_from_preset_and_overrides(tiny):
    m = MAGNET.from_preset(num_users(tiny), num_items(tiny), _dims(tiny), "paper-baby", view="single", top_k=2)
    pre = MAGNET_PRESETS["paper-baby"]
    assert m.head.top_k == 2 and m.encoder.num_layers == pre.config.num_layers
    assert m.lambda_ctr == pre.config.lambda_ctr and m.view == "single"
    with pytest.raises(ValueError, match="unknown MAGNET preset 'paper-bby'; did you mean 'paper-baby'"):
        MAGNET.from_preset(3, 3, _dims(tiny), "paper-bby")
    with pytest.raises(ValueError, match="unknown key 'dropuot'.*'dropout'"):
        MAGNET.from_preset(3, 3, _dims(tiny), "default", dropuot=0.1)
    with pytest.raises(ValueError, match="induced_weight"):
        MAGNET(3, 3, _dims(tiny), induced_weight=0.0)


def test_induced_weight_builds_the_weighted_union(tiny_dv):
    U, I = num_users(tiny_dv), num_items(tiny_dv)
    train, induced = split_edge_index(tiny_dv, "train"), tiny_dv[INDUCED].edge_index
    g = MAGNET(U, I, _dims(tiny_dv), induced_weight=0.25).prepare(tiny_dv)
    w = torch.cat([torch.ones(train.size(1)), torch.full((induced.size(1),), 0.25)])
    expect = bipartite_normalized_adjacency(torch.cat([train, induced], 1), U, I, w)
    assert torch.allclose(g.adj_uig.to_dense(), expect.to_dense())
    plain = MAGNET(U, I, _dims(tiny_dv)).prepare(tiny_dv)
    assert not torch.allclose(plain.adj_uig.to_dense(), expect.to_dense())
    assert torch.equal(g.user_degree, torch.bincount(train[0], minlength=U))


def test_positives_are_scored_without_themselves_in_the_history(tiny_dv):
    U, I = num_users(tiny_dv), num_items(tiny_dv)
    torch.manual_seed(0)
    model = MAGNET(U, I, _dims(tiny_dv), embedding_dim=8, dropout=0.0).eval()
    graph = model.prepare(tiny_dv)
    out = model(graph)
    train = split_edge_index(tiny_dv, "train")
    u, i = train[:, :40]
    h_loo = model.triple_user_cues(out, u, i, graph.user_degree)
    loo = model.pair_scores(out, u, i, h_loo).score
    for k in range(40):
        hist = train[1][train[0] == u[k]]
        rest = hist[hist != i[k]]
        h_u = out.h_i[rest].mean(0, keepdim=True) if rest.numel() else torch.zeros(1, *out.h_i.shape[1:])
        zu, zi = model.encoder.split(out.z)
        ref = model.head(zu[u[k]][None], zi[i[k]][None], h_u, out.h_i[i[k]][None]).score
        assert torch.allclose(loo[k], ref[0], atol=1e-5)
    model.exclude_target = False
    assert torch.equal(model.triple_user_cues(out, u, i, graph.user_degree), out.h_u[u])
    plain = model.pair_scores(out, u, i).score
    assert torch.allclose(plain, model.score(out, u, i), atol=1e-6)
    assert not torch.allclose(plain, loo)


@pytest.mark.parametrize("kw", [dict(), dict(expert_type="diag", residual=True, top_k=9, reg_weight=0.0),
                                dict(view="single", reg_weight=1e-3)])
def test_training_step_and_full_ranking_equals_pairs(tiny_dv, kw):
    U, I = num_users(tiny_dv), num_items(tiny_dv)
    torch.manual_seed(1)
    model = MAGNET(U, I, _dims(tiny_dv), embedding_dim=8, **kw)
    graph = model.prepare(tiny_dv)
    train = split_edge_index(tiny_dv, "train")
    loss, logs = model.loss(graph, train[0, :64], train[1, :64], torch.randint(0, I, (64,)))
    loss.backward()
    assert torch.isfinite(loss) and ("reg" in logs) == (kw.get("reg_weight", 1e-4) > 0)
    model.eval()
    state = model.inference(graph)
    users = torch.arange(5)
    full = model.score(state, users)
    pairs = torch.stack([model.score(state, users[[b]].repeat(I), torch.arange(I)) for b in range(5)])
    assert torch.allclose(full, pairs, atol=1e-5)


def test_behaviour_warmup_trains_only_the_backbone_and_scores_with_it(tiny_dv):
    U, I = num_users(tiny_dv), num_items(tiny_dv)
    with pytest.raises(ValueError, match="residual"):
        MAGNET(U, I, _dims(tiny_dv), warmup_epochs=2)
    with pytest.raises(ValueError, match="warmup_epochs"):
        MAGNET(U, I, _dims(tiny_dv), warmup_epochs=-1, residual=True)
    torch.manual_seed(2)
    model = MAGNET(U, I, _dims(tiny_dv), embedding_dim=8, residual=True, warmup_epochs=2)
    assert model.min_epochs == 2
    graph = model.prepare(tiny_dv)
    train = split_edge_index(tiny_dv, "train")
    batch = (train[0, :64], train[1, :64], torch.randint(0, I, (64,)))
    model.on_epoch_start(graph, 1, torch.Generator())
    loss, logs = model.loss(graph, *batch)
    loss.backward()
    assert logs["warmup"] == 1.0 and "entropy_norm" not in logs and model.schedule.step == 0
    assert model.encoder.embedding.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in (*model.head.parameters(), *model.cues.parameters()))
    # the zero-initialised Score head makes the model's ranking exactly the backbone's
    model.eval()
    state = model.inference(graph)
    zu, zi = model.encoder.split(state.z)
    users = torch.arange(6)
    full = model.score(state, users)
    assert torch.allclose(full - full[:, :1], (zu[users] @ zi.T) - (zu[users] @ zi[:1].T), atol=1e-5)
    model._warming = False  # the head's own path gives the same scores while v = 0
    assert torch.allclose(model.score(state, users), full, atol=1e-5)
    # after the warm-up the head and the schedule take over
    model.train()
    model.on_epoch_start(graph, 2, torch.Generator())
    loss, logs = model.loss(graph, *batch)
    loss.backward()
    assert "warmup" not in logs and model.schedule.step == 1
    assert model.head.score.weight.grad.abs().sum() > 0


def test_cli_warmup_run_logs_both_phases(tmp_path, capsys):
    import json
    from magnet_pyg.cli import main
    base = ["train", "--model", "magnet", "--set", "view=single", "--data", "synthetic-tiny",
            "--set", "embedding_dim=8", "--no-progress"]
    assert main(base + ["--set", "warmup_epochs=1"]) == 2
    assert "residual" in capsys.readouterr().err
    assert main(base + ["--set", "residual=true", "--set", "warmup_epochs=1", "--epochs", "2",
                        "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    first, second = res["epochs"]
    assert first["warmup"] == 1.0 and "entropy_norm" not in first
    assert "warmup" not in second and second["switch_step"] >= -1 and "expert_mass" in second
    assert res["config"]["model_options"]["warmup_epochs"] == 1


def test_the_dataset_preset_is_picked_and_keys_override_it(tmp_path):
    import json
    from magnet_pyg.cli import main
    from magnet_pyg.config import load_run_config
    pre = MAGNET_PRESETS["synthetic-small"]
    run = load_run_config(model="magnet", overrides=["data=synthetic"])      # synthetic = synthetic-small
    assert run.preset == "synthetic-small" and run.model_options == pre.config
    assert (run.model_options.expert_type, run.model_options.strategy) == ("diag", "quad")
    assert (run.train.lr, run.train.batch_size) == (pre.lr, pre.batch_size)
    run = load_run_config(model="magnet", overrides=["data=synthetic-tiny", "preset=synthetic-small", "strategy=lin"])
    assert (run.preset, run.model_options.expert_type, run.model_options.strategy) == ("synthetic-small", "diag", "lin")
    run = load_run_config(model="magnet", overrides=["data=/some/where/tiktok/"])
    assert run.preset == "tiktok" and run.model_options.warmup_epochs == 60
    run = load_run_config(model="magnet", overrides=["data=synthetic-tiny"])
    assert (run.preset, run.model_options) == ("default", MAGNET_PRESETS["default"].config)
    # the run records the resolved preset and every option
    assert main(["train", "--model", "magnet", "--set", "view=single", "--data", "synthetic-tiny", "--epochs", "1",
                 "--set", "embedding_dim=8", "--set", "preset=synthetic-small", "--no-progress",
                 "--out", str(tmp_path / "r")]) == 0
    cfg = json.loads((tmp_path / "r" / "results.json").read_text())["config"]
    assert cfg["preset"] == "synthetic-small" and cfg["model_options"]["expert_type"] == "diag"
    assert cfg["model_options"]["embedding_dim"] == 8 and cfg["model_options"]["view"] == "single"


def test_single_view_warmup_is_lightgcn_bit_for_bit(tmp_path):
    """MAGNET-SV's behaviour warm-up trains LightGCN's objective on the observed graph with
    LightGCN's initialisation and sampler: the same seed gives the same validation curve and the
    same selected test metrics, to the last bit (on Amazon Sports, seed 0, 100 epochs:
    docs/results.md, ablations of the from-scratch MAGNET-DV)."""
    import json
    from magnet_pyg.cli import main
    common = ["--data", "synthetic-tiny", "--epochs", "3", "--batch-size", "64", "--lr", "1e-3",
              "--seed", "3", "--threads", "1", "--no-progress", "--set", "embedding_dim=8",
              "--set", "num_layers=2", "--set", "reg_weight=1e-4"]
    assert main(["train", "--model", "lightgcn", "--out", str(tmp_path / "lgn")] + common) == 0
    assert main(["train", "--model", "magnet", "--set", "preset=tiktok", "--set", "view=single",
                 "--set", "warmup_epochs=3", "--out", str(tmp_path / "sv")] + common) == 0
    lgn, sv = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("lgn", "sv"))
    assert [e["valid"] for e in sv["epochs"]] == [e["valid"] for e in lgn["epochs"]]
    assert len(sv["epochs"]) == 3 and sv["epochs"][0]["warmup"] == 1.0 and sv["test"]["recall@20"] > 0
    assert sv["best_epoch"] == lgn["best_epoch"] and sv["test"] == lgn["test"]
