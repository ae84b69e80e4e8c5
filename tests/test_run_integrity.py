"""Run folders hold one run, resume is exact or refused, and bad settings fail early."""
import json
import math
import os

import pytest
import torch

from magnet_pyg.cli import main
from magnet_pyg.data import synthetic
from magnet_pyg.train import TrainConfig, atomic_json_dump
from magnet_pyg.train.run_folder import RunFolder, RunFolderError, config_differences
from magnet_pyg.train.trainer import check_finite, check_splits

BASE = ["train", "--model", "bpr", "--data", "synthetic-tiny", "--epochs", "2", "--batch-size", "128",
        "--set", "embedding_dim=8", "--no-progress", "--threads", "1"]


def test_a_folder_with_a_run_is_refused_unless_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(BASE + ["--out", str(out)]) == 0
    first = json.loads((out / "results.json").read_text())
    assert main(BASE + ["--out", str(out), "--lr", "0.01"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text()) == first       # untouched
    assert main(BASE + ["--out", str(out), "--lr", "0.01", "--overwrite"]) == 0
    moved = list(tmp_path.glob("run.replaced-*"))
    assert len(moved) == 1 and json.loads((moved[0] / "results.json").read_text()) == first
    second = json.loads((out / "results.json").read_text())
    assert second["config"]["lr"] == 0.01 and not (out / ".lock").exists()


def test_resume_with_other_options_is_refused_and_lists_them(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(BASE + ["--out", out]) == 0
    assert main(BASE + ["--out", out, "--resume", "--lr", "0.5", "--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert "lr: 0.001 -> 0.5" in err and "seed: 0 -> 3" in err
    fewer = [a if a != "2" else "1" for a in BASE]
    assert main(fewer + ["--out", out, "--resume"]) == 2
    assert "epochs: 2 -> 1" in capsys.readouterr().err
    more = [a if a != "2" else "3" for a in BASE]                                     # a larger budget is safe
    assert main(more + ["--out", out, "--resume"]) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert len(res["epochs"]) == 3


def test_resume_refuses_another_dataset(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(BASE + ["--out", out]) == 0
    assert main(BASE + ["--out", out, "--resume", "--data-seed", "1"]) == 2
    assert "data_seed" in capsys.readouterr().err


def test_lock_stops_a_second_writer_and_stale_locks_are_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("1")   # PID 1 always exists
    with pytest.raises(RunFolderError, match="in use by process 1"):
        with RunFolder(out, {"a": 1}):
            pass
    (out / ".lock").write_text(str(2 ** 22 + 12345))   # no such process
    with RunFolder(out, {"a": 1}) as f:
        assert (out / ".lock").read_text() == str(os.getpid())
    assert not (out / ".lock").exists() and f.moved_to is None


def test_config_differences():
    assert config_differences({"lr": 1e-3, "epochs": 4, "progress": True},
                              {"lr": 1e-3, "epochs": 8, "progress": False}) == []
    assert config_differences({"epochs": 4}, {"epochs": 2}) == ["epochs: 4 -> 2"]
    assert config_differences({"a": 1}, {}) == ["a: 1 -> '<absent>'"]


@pytest.mark.parametrize("field, value, match", [
    ("lr", math.inf, "lr must be a finite"), ("lr", math.nan, "lr must be a finite"),
    ("weight_decay", math.inf, "weight_decay must be a finite"),
    ("ks", (20, 0), "cut-offs ks must be positive"), ("eval_every", 0, "eval_every must be"),
])
def test_bad_settings_fail_before_training(field, value, match):
    cfg = TrainConfig(**{field: value}) if field != "ks" else TrainConfig(ks=value, select_metric="ndcg@20")
    with pytest.raises(ValueError, match=match):
        cfg.validate()


def test_cli_refuses_non_finite_lr_and_zero_cutoff(tmp_path, capsys):
    assert main(BASE + ["--lr", "inf"]) == 2
    assert "lr must be a finite number" in capsys.readouterr().err
    assert main(BASE + ["--ks", "20", "0"]) == 2
    assert "cut-offs" in capsys.readouterr().err


def test_results_json_is_strict(tmp_path):
    with pytest.raises(ValueError):
        atomic_json_dump({"x": float("nan")}, tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists() and not list(tmp_path.iterdir())


def test_non_finite_loss_stops_the_run():
    with pytest.raises(FloatingPointError, match="epoch 3, step 7"):
        check_finite(torch.tensor(float("nan")), 3, 7)
    check_finite(torch.tensor(1.0), 0, 0)


def test_empty_splits_are_refused_with_the_counts():
    d = synthetic("tiny", seed=0)
    d.valid_edge_index = d.valid_edge_index[:, :0]
    with pytest.raises(ValueError, match=r"the valid split is empty \(train/valid/test pairs: \d+/0/\d+\)"):
        check_splits(d)


def test_finish_ends_a_run_early_and_tests_the_selected_checkpoint(tmp_path):
    import signal, subprocess, sys, time
    out = tmp_path / "run"
    args = [a if a != "2" else "50" for a in BASE] + ["--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "magnet_pyg", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not (out / "last.pt").exists() and time.time() - t0 < 120:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert main(args + ["--resume", "--finish"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["finished_early"] and 1 <= len(res["epochs"]) < 50
    assert res["best_epoch"] == max(range(len(res["epochs"])), key=lambda e: res["epochs"][e]["valid"]["ndcg@20"])
    assert main(BASE + ["--out", str(tmp_path / "x"), "--finish"]) == 2   # finish needs resume
