import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from magnet_pyg.cli import main
from magnet_pyg.data import num_items, num_users, split_edge_index, synthetic
from magnet_pyg.models import BPRMF, LightGCN
from magnet_pyg.train import LinkSampler, TrainConfig, Trainer, WeightAverage, load_checkpoint


def test_negatives_avoid_training_items_vectorised():
    d = synthetic("tiny", seed=0)
    ei = split_edge_index(d, "train")
    s = LinkSampler(ei, num_items(d), batch_size=100)
    g = torch.Generator().manual_seed(0)
    batches = list(s.epoch(g))
    assert len(batches) == len(s) == -(-ei.size(1) // 100)
    users = torch.cat([b[0] for b in batches])
    pos = torch.cat([b[1] for b in batches])
    neg = torch.cat([b[2] for b in batches])
    train = set(map(tuple, ei.t().tolist()))
    assert all((u, i) in train for u, i in zip(users.tolist(), pos.tolist()))
    assert not any((u, j) in train for u, j in zip(users.tolist(), neg.tolist()))
    assert sorted(zip(users.tolist(), pos.tolist())) == sorted(train)  # every pair once per epoch


def test_sampler_refuses_user_with_every_item():
    ei = torch.tensor([[0, 0], [0, 1]])
    with pytest.raises(ValueError, match="user 0 has interacted with every item"):
        LinkSampler(ei, 2)


def _fit(model_cls, seed, out=None, **kw):
    d = synthetic("tiny", seed=0)
    torch.manual_seed(seed)
    m = model_cls(num_users(d), num_items(d), 16)
    cfg = TrainConfig(epochs=4, batch_size=128, lr=5e-3, seed=seed, progress=False, out_dir=out, **kw)
    return Trainer(cfg).fit(m, d, model_cls.__name__)


@pytest.mark.parametrize("model_cls", [BPRMF, LightGCN])
def test_same_seed_same_metrics(model_cls, tmp_path):
    a = _fit(model_cls, 1, out=str(tmp_path / "a"))
    b = _fit(model_cls, 1)
    assert a["test"] == b["test"] and a["valid"] == b["valid"]
    assert [e["loss"] for e in a["epochs"]] == [e["loss"] for e in b["epochs"]]
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    for key in ("model", "dataset", "config", "best_epoch", "valid", "test", "epochs"):
        assert key in saved
    assert {"epoch", "loss", "train_seconds", "eval_seconds", "valid"} <= set(saved["epochs"][0])
    assert "recall@20" in saved["test"] and "ndcg@20" in saved["valid"]
    ck = load_checkpoint(tmp_path / "a" / "last.pt")  # weights_only=True
    assert ck["epoch"] == 3 and not list(tmp_path.glob("a/.*.tmp"))


def test_resume_in_process_equals_uninterrupted(tmp_path):
    full = _fit(LightGCN, 2)
    # a run that stopped after epoch 1 (its checkpoint says so), then resumed to epoch 3
    part = tmp_path / "part"
    d = synthetic("tiny", seed=0)
    torch.manual_seed(2)
    m = LightGCN(num_users(d), num_items(d), 16)
    Trainer(TrainConfig(epochs=2, batch_size=128, lr=5e-3, seed=2, progress=False, out_dir=str(part))).fit(m, d)
    resumed = _fit(LightGCN, 2, out=str(part), resume=True)
    assert resumed["test"] == full["test"]
    assert [e["loss"] for e in resumed["epochs"]] == [e["loss"] for e in full["epochs"]]


def test_weight_average_is_the_ema_and_swaps_back():
    lin = torch.nn.Linear(3, 2)
    avg = WeightAverage(lin, decay=0.9)
    start = {n: p.detach().clone() for n, p in lin.named_parameters()}
    with torch.no_grad():
        for p in lin.parameters():
            p.add_(1.0)
    avg.update(lin)
    trained = {n: p.detach().clone() for n, p in lin.named_parameters()}
    for n in start:  # 0.9 * old + 0.1 * new
        torch.testing.assert_close(avg.shadow[n], 0.9 * start[n] + 0.1 * trained[n])
    with pytest.raises(RuntimeError, match="inside"):
        with avg.swapped(lin):
            for n, p in lin.named_parameters():
                assert torch.equal(p, avg.shadow[n])
            raise RuntimeError("inside")
    for n, p in lin.named_parameters():  # the trained parameters are back, also after an error
        assert torch.equal(p, trained[n])
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\)"):
        WeightAverage(lin, decay=1.0)


def test_weight_average_selects_the_average_and_resumes_exactly(tmp_path):
    full = _fit(LightGCN, 3, out=str(tmp_path / "full"), ema_decay=0.9)
    plain = _fit(LightGCN, 3)
    # training is unchanged (same losses), evaluation sees other parameters
    assert [e["loss"] for e in full["epochs"]] == [e["loss"] for e in plain["epochs"]]
    assert [e["valid"] for e in full["epochs"]] != [e["valid"] for e in plain["epochs"]]
    last = load_checkpoint(tmp_path / "full" / "last.pt")
    best = load_checkpoint(tmp_path / "full" / "best.pt")
    assert full["best_epoch"] == 3  # last epoch: best.pt holds the average, last.pt the iterate
    torch.testing.assert_close(best["model"]["encoder.embedding.weight"], last["average"]["shadow"]["encoder.embedding.weight"])
    assert not torch.equal(best["model"]["encoder.embedding.weight"], last["model"]["encoder.embedding.weight"])
    part = tmp_path / "part"
    d = synthetic("tiny", seed=0)
    torch.manual_seed(3)
    m = LightGCN(num_users(d), num_items(d), 16)
    Trainer(TrainConfig(epochs=2, batch_size=128, lr=5e-3, seed=3, progress=False, out_dir=str(part),
                        ema_decay=0.9)).fit(m, d)
    resumed = _fit(LightGCN, 3, out=str(part), resume=True, ema_decay=0.9)
    assert resumed["test"] == full["test"] and resumed["best_epoch"] == full["best_epoch"]
    assert [(e["loss"], e["valid"]) for e in resumed["epochs"]] == [(e["loss"], e["valid"]) for e in full["epochs"]]
    _fit(LightGCN, 3, out=str(tmp_path / "plain"))
    with pytest.raises(ValueError, match="ema_decay: 0.0 -> 0.9"):  # resumed with another option
        _fit(LightGCN, 3, out=str(tmp_path / "plain"), resume=True, ema_decay=0.9)


@pytest.mark.slow
def test_resume_after_sigkill_mid_epoch(tmp_path):
    args = [sys.executable, "-m", "magnet_pyg", "train", "--model", "lightgcn", "--data", "synthetic",
            "--epochs", "4", "--batch-size", "64", "--set", "embedding_dim=16", "--seed", "5", "--no-progress",
            "--threads", "1", "--patience", "50"]
    ref = tmp_path / "ref"
    subprocess.run(args + ["--out", str(ref)], check=True, capture_output=True)
    run = tmp_path / "run"
    proc = subprocess.Popen(args + ["--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until epoch 0 is checkpointed, then kill inside epoch 1
        if (run / "last.pt").exists():
            time.sleep(0.3)
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "results.json").exists(), "the run finished before it could be killed"
    subprocess.run(args + ["--out", str(run), "--resume"], check=True, capture_output=True)
    a = json.loads((ref / "results.json").read_text())
    b = json.loads((run / "results.json").read_text())
    assert a["test"] == b["test"] and a["best_epoch"] == b["best_epoch"]
    assert [e["loss"] for e in a["epochs"]] == [e["loss"] for e in b["epochs"]]


def test_cli_prints_table_and_writes_results(tmp_path, capsys):
    assert main(["train", "--model", "bpr", "--data", "synthetic-tiny", "--epochs", "2", "--set", "embedding_dim=8",
                 "--no-progress", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "recall@20" in out and "test" in out
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["model"] == "bpr" and res["dataset"] == "synthetic-tiny"


@pytest.mark.parametrize("argv,needle", [
    (["--device", "cuda:0"], "no CUDA GPU"),
    (["--epochs", "0"], "epochs must be >= 1"),
    (["--select-metric", "ndcg@7"], "select_metric"),
    (["--resume"], "resume=True needs out_dir"),
    (["--data", "/nonexistent/folder"], "not found"),
])
def test_cli_bad_options_fail_fast(argv, needle, capsys):
    if "cuda" in argv[-1] and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["train", "--model", "bpr", "--data", "synthetic-tiny", "--no-progress"] + argv) == 2
    assert needle in capsys.readouterr().err


def test_early_stopping_waits_for_the_models_minimum_epochs():
    from magnet_pyg.train.trainer import close_epoch

    class Warm(torch.nn.Linear):
        min_epochs = 4

    cfg = TrainConfig(select_metric="recall@20", progress=False)
    for model, stop_at in ((torch.nn.Linear(2, 2), 2), (Warm(2, 2), 5)):
        opt = torch.optim.Adam(model.parameters())
        best, history = {"value": float("-inf"), "epoch": -1, "valid": {}, "bad_epochs": 0}, []
        for epoch in range(10):  # best at epoch 0, never improved: patience 2
            rec = {"epoch": epoch, "loss": 0.0, "train_seconds": 0.0, "eval_seconds": 0.0,
                   "valid": {"recall@20": 1.0 if epoch == 0 else 0.5}}
            best, _, stopped = close_epoch(cfg, model, opt, None, rec, history, best, patience=2)
            if stopped:
                break
        assert epoch == stop_at and best["epoch"] == 0


def test_eval_every_validates_every_nth_and_last_epoch(tmp_path):
    d = synthetic("tiny", seed=0)
    cfg = TrainConfig(epochs=5, batch_size=256, eval_every=2, patience=50, seed=0, progress=False,
                      out_dir=str(tmp_path))
    res = Trainer(cfg).fit(LightGCN(num_users(d), num_items(d), 16, 2, 1e-4), d)
    assert ["valid" in e for e in res["epochs"]] == [False, True, False, True, True]
    assert res["best_epoch"] in (1, 3, 4)
    with pytest.raises(ValueError, match="eval_every"):
        TrainConfig(eval_every=0).validate()


def test_warm_start_copies_matching_tensors_and_refuses_other_shapes(tmp_path):
    from magnet_pyg.data import modality_features
    from magnet_pyg.models import MAGNET
    from magnet_pyg.train.checkpoint import warm_start
    d = synthetic("tiny", seed=0)
    _fit(LightGCN, 0, out=str(tmp_path / "lgcn"))
    dims = {k: v.size(1) for k, v in modality_features(d).items()}
    m = MAGNET(num_users(d), num_items(d), dims, embedding_dim=16, view="single", residual=True)
    names = warm_start(m, tmp_path / "lgcn")
    assert names == ["encoder.embedding.weight"]
    best = load_checkpoint(tmp_path / "lgcn" / "best.pt")["model"]["encoder.embedding.weight"]
    assert torch.equal(m.encoder.embedding.weight.detach(), best)
    with pytest.raises(ValueError, match="shapes differ"):
        warm_start(MAGNET(num_users(d), num_items(d), dims, embedding_dim=8), tmp_path / "lgcn")
    with pytest.raises(FileNotFoundError, match="not found"):
        warm_start(m, tmp_path / "nothing")
    # through the trainer: a 1-epoch MAGNET-SV run warm-started from the LightGCN run
    cfg = TrainConfig(epochs=1, batch_size=128, seed=0, progress=False, init_from=str(tmp_path / "lgcn"))
    res = Trainer(cfg).fit(m, d)
    assert res["config"]["init_from"] == str(tmp_path / "lgcn")
