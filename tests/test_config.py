"""Typed configuration: model configuration classes, YAML run configurations, overrides, the
recorded config.json layout (and the earlier one), resume, and equivalence with the flag-based
command lines the configuration files replace."""
import dataclasses
import inspect
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from magnet_pyg.cli import main
from magnet_pyg.config import (CONFIG_VERSION, RunConfig, dump_yaml, load_run_config, load_yaml,
                               parse_value, resolve_run_config)
from magnet_pyg.data import load_dataset, num_items, num_users, split_edge_index, synthetic
from magnet_pyg.models import MAGNET, MAGNET_PRESETS, MODELS, MagnetConfig, model_from_config
from magnet_pyg.models.magnet import resolve_switch_epoch
from magnet_pyg.train import TrainConfig, Trainer

from conftest import modality_dims

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*/*.yaml"))


# ----------------------------------------------------------------------------- model configurations
@pytest.mark.parametrize("name", list(MODELS))
def test_config_class_is_the_constructor_signature(name):
    entry = MODELS[name]
    params = {p.name: p.default for p in inspect.signature(entry.model.__init__).parameters.values()
              if p.name not in ("self", "num_users", "num_items", "modality_dims", "in_channels")}
    fields = {f.name: f.default for f in dataclasses.fields(entry.config)}
    assert entry.config.constructor_fields == tuple(params)
    assert {k: fields[k] for k in params} == params                   # one home: the constructor
    extra = set(fields) - set(params)
    assert extra == ({"knn_k", "expand_r", "knn_backend", "switch_epoch"} if name == "magnet" else set())
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.config().embedding_dim = 3


def test_magnet_defaults_are_the_default_preset(data):
    assert MagnetConfig() == MAGNET_PRESETS["default"].config
    m = MAGNET(num_users(data), num_items(data), modality_dims(data))
    assert m.reg_weight == MagnetConfig().reg_weight == 1e-4 and MagnetConfig().dropout == 0.0
    assert all(isinstance(p.config, MagnetConfig) for p in MAGNET_PRESETS.values())
    assert MAGNET_PRESETS["tiktok"].config == dataclasses.replace(
        MagnetConfig(), residual=True, warmup_epochs=60, detach_router=True)
    assert MAGNET_PRESETS["paper-sports"].train_defaults() == {"lr": 1.5e-3, "weight_decay": 2e-5, "batch_size": 1024}


def test_switch_epoch_becomes_steps():
    cfg = MagnetConfig(routing="fixed", switch_epoch=10)
    assert resolve_switch_epoch(cfg, 7).switch_at == 70
    assert resolve_switch_epoch(MagnetConfig(routing="fixed", switch_epoch=0), 7).switch_at == 1
    with pytest.raises(ValueError, match="routing='fixed'"):
        resolve_switch_epoch(MagnetConfig(switch_epoch=3), 7)
    with pytest.raises(ValueError, match="switch_epoch is given in epochs"):
        MAGNET.from_config(3, 3, {"a": 2}, cfg)


# ----------------------------------------------------------------------------- files
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_configuration_file_loads_and_builds(path, data):
    raw = load_yaml(path)
    assert set(raw) <= {"model", "preset", "data", "train", "model_options"} and raw["model"] == path.parent.name
    run = load_run_config(path)
    run.train.validate()
    assert path.stem == run.data.name or path.stem.startswith(run.data.name + "-")  # <data>[-<variant>].yaml
    opts = run.model_options
    if isinstance(opts, MagnetConfig):
        opts = resolve_switch_epoch(opts, 1)
    model = model_from_config(run.model, opts, num_users(data), num_items(data),
                              modality_dims(data) if MODELS[run.model].multimodal else None)
    assert isinstance(model, MODELS[run.model].model)
    # the printed configuration reads back to the same configuration
    again = resolve_run_config(__import__("yaml").safe_load(dump_yaml(run.to_dict())))
    assert again == run


def test_every_grid_resolves():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sweep import load_grid
    grids = sorted((ROOT / "benchmarks" / "grids").glob("*.yaml"))
    assert grids
    for g in grids:
        for e in load_grid(g):
            assert (ROOT / e["config"]).is_file()


#: what ``magnet-pyg train --model magnet --data tiktok --epochs 200 --patience 10`` (the MAGNET-DV
#: command of docs/results.md, before configuration files) resolved to: its recorded options
TIKTOK_MAGNET_FLAGS = {
    "model_options": {
        "embedding_dim": 64, "num_layers": 2, "view": "dual", "moe": True, "templates": True, "num_experts": None,
        "top_k": 4, "families": "full", "split": 1, "alpha": 0.6, "beta": 0.2, "delta": 0.5, "eps": 0.05,
        "dropout": 0.0, "threshold": 0.9, "window": 3, "lambda_r": 0.3, "strategy": "lin", "routing": "entropy",
        "switch_at": None, "lambda_ctr": 0.01, "tau": 0.5, "feature_norm": "l2", "bpr_reduction": "mean",
        "expert_type": "linear", "residual": True, "detach_router": True, "reg_weight": 0.0001,
        "exclude_target": True, "induced_weight": 1.0, "warmup_epochs": 60, "knn_k": 20, "expand_r": 10},
    "train": {"batch_size": 2048, "lr": 0.001, "weight_decay": 0.0, "epochs": 200, "patience": 10,
              "select_metric": "ndcg@20", "ks": (10, 20, 50), "eval_batch_size": 4096,
              "mask_valid_in_test": False, "seed": 0, "device": "cpu", "ema_decay": 0.0, "eval_every": 1,
              "init_from": None},
}


def test_tiktok_magnet_config_equals_the_flag_command():
    run = load_run_config(ROOT / "configs" / "magnet" / "tiktok.yaml")
    assert (run.model, run.preset, run.data.name) == ("magnet", "tiktok", "tiktok")
    opts = dataclasses.asdict(run.model_options)
    assert {k: opts[k] for k in TIKTOK_MAGNET_FLAGS["model_options"]} == TIKTOK_MAGNET_FLAGS["model_options"]
    assert (opts["knn_backend"], opts["switch_epoch"]) == ("auto", None)
    assert {k: getattr(run.train, k) for k in TIKTOK_MAGNET_FLAGS["train"]} == TIKTOK_MAGNET_FLAGS["train"]
    # the flags that remain give the same configuration
    flags = ["train", "--model", "magnet", "--data", "tiktok", "--epochs", "200", "--patience", "10"]
    from magnet_pyg.cli import build_parser, run_config_from_args
    assert run_config_from_args(build_parser().parse_args(flags)) == run


def test_synthetic_config_trains_as_the_python_api(tmp_path, one_thread):
    """``train --config configs/magnet/synthetic.yaml --set seed=0 --set epochs=2`` against what the
    flag command (``--model magnet --data synthetic``, preset synthetic-small) built."""
    assert main(["train", "--config", str(ROOT / "configs/magnet/synthetic.yaml"), "--set", "seed=0",
                 "--set", "epochs=2", "--no-progress", "--graph-cache", "", "--out", str(tmp_path / "cfg")]) == 0
    got = json.loads((tmp_path / "cfg" / "results.json").read_text())
    from magnet_pyg.graph import add_induced_edges
    data = load_dataset("synthetic", seed=0)
    pre = MAGNET_PRESETS["synthetic-small"]
    torch.manual_seed(0)
    model = MAGNET.from_preset(num_users(data), num_items(data), modality_dims(data), "synthetic-small")
    data = add_induced_edges(data, k=20, r=10, cache_dir=None, progress=False)
    ref = Trainer(TrainConfig(epochs=2, patience=10, batch_size=pre.batch_size, lr=pre.lr,
                              weight_decay=pre.weight_decay, seed=0, progress=False)).fit(model, data, "magnet")
    assert len(got["epochs"]) == len(ref["epochs"]) == 2
    for a, b in zip(got["epochs"], ref["epochs"]):
        assert set(a["valid"]) == set(b["valid"])
        assert all(abs(a["valid"][k] - b["valid"][k]) <= 1e-6 for k in a["valid"])
    assert got["test"] == pytest.approx(ref["test"], abs=1e-6)


# ----------------------------------------------------------------------------- errors
def _err(capsys, argv):
    rc = main(["train", *argv, "--print-config"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "usage:" not in err
    return err


def test_unknown_and_foreign_keys_name_the_key_the_model_and_a_match(capsys, tmp_path):
    err = _err(capsys, ["--model", "lightgcn", "--set", "knn_k=5"])
    assert "model 'lightgcn' has no option 'knn_k'" in err and "magnet" in err
    err = _err(capsys, ["--model", "lightgcn", "--set", "model_options.residual=true"])
    assert "model 'lightgcn' has no option 'residual' (an option of magnet)" in err
    err = _err(capsys, ["--model", "magnet", "--set", "knn_kk=3"])
    assert "unknown key 'knn_kk'" in err and "did you mean 'knn_k'" in err
    err = _err(capsys, ["--model", "bpr", "--set", "train.epoch=3"])
    assert "did you mean 'train.epochs'" in err
    err = _err(capsys, ["--model", "lightgnc"])
    assert "unknown model 'lightgnc'; did you mean 'lightgcn'?" in err
    err = _err(capsys, ["--model", "lightgcn", "--set", "preset=tiktok"])
    assert "model 'lightgcn' has no presets" in err
    err = _err(capsys, ["--model", "magnet", "--set", "preset=tiktk"])
    assert "did you mean 'tiktok'" in err
    err = _err(capsys, ["--model", "bpr", "--set", "epochs=1.5"])
    assert "train.epochs: expected int, got 1.5" in err
    err = _err(capsys, ["--model", "bpr", "--set", "resplit_seed=3"])
    assert "data.resplit_seed" in err
    # model options given as flags (the earlier command line) are refused with their --set form
    err = _err(capsys, ["--model", "lightgcn", "--knn-k", "5", "--crane-tau", "9"])
    assert "--knn-k" in err and "--set knn_k=" in err
    err = _err(capsys, ["--model", "magnet", "--no-detach-router"])
    assert "--set detach_router=false" in err
    err = _err(capsys, ["--model", "magnet", "--fixed-switch", "3"])
    assert "--set routing=fixed --set switch_epoch=EPOCH" in err
    err = _err(capsys, ["--model", "bpr", "--epochz", "3"])
    assert "did you mean '--epochs'" in err
    err = _err(capsys, [])
    assert "--config FILE" in err
    # a file: unknown section, a key of another model, duplicate keys
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: lightgcn\nmodle_options: {num_layers: 3}\n")
    assert "did you mean 'model_options'" in _err(capsys, ["--config", str(bad)])
    bad.write_text("model: lightgcn\nmodel_options:\n  num_layers: 3\n  warmup_epochs: 5\n")
    err = _err(capsys, ["--config", str(bad)])
    assert str(bad) in err and "model 'lightgcn' has no option 'warmup_epochs'" in err
    bad.write_text("model: lightgcn\ntrain: {epochs: 3, epochs: 4}\n")
    assert "duplicate key 'epochs'" in _err(capsys, ["--config", str(bad)])
    bad.write_text("model: magnet\ntrain: {out_dir: x}\n")
    assert "chosen per run" in _err(capsys, ["--config", str(bad)])


def test_overrides_resolve_short_and_dotted_keys_as_yaml():
    assert [parse_value(v) for v in ("off", "yes", "1e-4", "true", "null", "[10, 20]")] == \
        ["off", "yes", 1e-4, True, None, [10, 20]]
    run = load_run_config(ROOT / "configs/magnet/tiktok.yaml",
                          ["seed=3", "epochs=5", "model_options.knn_k=5", "routing=off", "ks=[10, 20]",
                           "select_metric=ndcg@10", "data.seed=2", "lr=2e-3"])
    assert (run.train.seed, run.train.epochs, run.train.ks, run.train.lr) == (3, 5, (10, 20), 2e-3)
    assert (run.model_options.knn_k, run.model_options.routing, run.data.seed) == (5, "off", 2)
    # file < flags < --set, applied in order; the preset is the base of the file's keys
    run = load_run_config(ROOT / "configs/magnet/tiktok.yaml", ["preset=default", "epochs=7", "epochs=8"])
    assert run.model_options == dataclasses.replace(MagnetConfig(), view="dual") and run.train.epochs == 8
    run = load_run_config(model="recgoat", overrides=["data=tiktok"])
    assert (run.train.lr, run.train.batch_size) == (8e-4, 4096)           # the model's default_train


# ----------------------------------------------------------------------------- recorded configuration
def _train(tmp_path, name, *extra):
    out = tmp_path / name
    assert main(["train", "--data", "synthetic-tiny", "--epochs", "2", "--batch-size", "256", "--no-progress",
                 "--graph-cache", "", "--out", str(out), *extra]) == 0
    return out


def test_config_json_records_the_resolved_configuration(tmp_path, one_thread):
    out = _train(tmp_path, "m", "--model", "magnet", "--set", "embedding_dim=8", "--set", "routing=fixed",
                 "--set", "switch_epoch=1", "--set", "view=single")
    rec = json.loads((out / "config.json").read_text())["config"]
    assert rec["config_version"] == CONFIG_VERSION and (rec["model"], rec["preset"]) == ("magnet", "default")
    assert rec["modalities"] == ["image", "text"] and rec["keep_cold_start"] is False
    steps = -(-int(split_edge_index(synthetic("tiny", seed=0), "train").size(1)) // 256)
    expected = dataclasses.replace(MagnetConfig(), embedding_dim=8, routing="fixed", switch_epoch=1,
                                   switch_at=steps, view="single")
    assert rec["model_options"] == json.loads(json.dumps(dataclasses.asdict(expected)))
    run = RunConfig.from_record(rec)
    assert run.model_options == expected and run.train.batch_size == 256 and run.data.name == "synthetic-tiny"
    from magnet_pyg.interpret.run import build_model
    model = build_model("magnet", synthetic("tiny", seed=0), rec["model_options"])
    state = torch.load(out / "best.pt", weights_only=False)["model"]
    model.load_state_dict(state)                                          # strict: the same model


#: ``model_options`` as the earlier command line recorded them (copied from Sports run folders)
EARLIER = {
    "lightgcn": {"dim": 64, "layers": 2, "reg_weight": 0.0001},
    "magnet": {"embedding_dim": 64, "num_layers": 2, "view": "dual", "moe": True, "templates": True,
               "num_experts": None, "top_k": 4, "families": "full", "split": 1, "alpha": 0.6, "beta": 0.2,
               "delta": 0.5, "eps": 0.05, "dropout": 0.0, "threshold": 0.9, "window": 3, "lambda_r": 0.3,
               "strategy": "lin", "routing": "entropy", "switch_at": None, "lambda_ctr": 0.01, "tau": 0.5,
               "feature_norm": "l2", "bpr_reduction": "mean", "expert_type": "linear", "residual": True,
               "detach_router": True, "reg_weight": 0.0001, "exclude_target": True, "induced_weight": 1.0,
               "warmup_epochs": 0, "preset": "warm-start", "knn_k": 20, "expand_r": 10,
               "modalities": ["keyword", "text"]},
}


def test_earlier_layout_records_translate():
    base = {"epochs": 60, "batch_size": 2048, "lr": 0.001, "weight_decay": 0.0, "patience": None,
            "select_metric": "ndcg@20", "ks": [10, 20, 50], "seed": 0, "device": "cpu", "data": "sports",
            "data_seed": 0, "resplit_seed": None, "init_from": "/runs/lgcn"}
    run = RunConfig.from_record({**base, "model_options": EARLIER["magnet"]}, model="magnet")
    assert run.preset == "warm-start" and run.model_options == MAGNET_PRESETS["warm-start"].config
    assert run.data.modalities == ["keyword", "text"] and run.train.init_from == "/runs/lgcn"
    run = RunConfig.from_record({**base, "model_options": EARLIER["lightgcn"]}, model="lightgcn")
    assert run.preset is None and run.model_options == MODELS["lightgcn"].config(num_layers=2)
    with pytest.raises(ValueError, match="does not name its model"):
        RunConfig.from_record({**base, "model_options": EARLIER["lightgcn"]})


def _to_earlier_layout(folder: Path):
    """Rewrite a run folder's records into the layout the earlier command line wrote."""
    for name in ("config.json", "results.json"):
        path = folder / name
        doc = json.loads(path.read_text())
        cfg = doc["config"]
        model, opts = cfg.pop("model"), cfg.pop("model_options")
        preset, mods = cfg.pop("preset"), cfg.pop("modalities")
        for key in ("config_version", "keep_cold_start"):
            cfg.pop(key)
        if model in ("bpr", "lightgcn"):
            opts = {"dim": opts["embedding_dim"], "reg_weight": opts["reg_weight"],
                    **({"layers": opts["num_layers"]} if model == "lightgcn" else {})}
        elif model == "magnet":
            for key in ("knn_backend", "switch_epoch"):
                opts.pop(key)
            opts.update(preset=preset, modalities=mods)
        else:
            opts = {"dim": opts.pop("embedding_dim"), **opts, "modalities": mods}
        cfg["model_options"] = opts
        path.write_text(json.dumps(doc))


@pytest.mark.parametrize("model", ["lightgcn", "magnet", "crane"])
def test_resume_compares_the_configuration_in_either_layout(tmp_path, one_thread, capsys, model):
    args = ["--model", model, "--set", "embedding_dim=8"]
    out = _train(tmp_path, "run", *args)
    assert main(["train", "--data", "synthetic-tiny", "--epochs", "3", "--batch-size", "256", "--no-progress",
                 "--graph-cache", "", "--out", str(out), "--resume", *args]) == 0
    changed = {"lightgcn": "num_layers=3", "magnet": "tau=0.2", "crane": "tau=0.5"}[model]
    resume = ["train", "--data", "synthetic-tiny", "--epochs", "3", "--batch-size", "256", "--no-progress",
              "--graph-cache", "", "--out", str(out), "--resume", "--finish", *args]
    capsys.readouterr()
    assert main(resume + ["--set", changed]) == 2
    key, _, value = changed.partition("=")
    assert f"model_options.{key}:" in capsys.readouterr().err
    # the earlier layout: the same options resume, others are refused
    _to_earlier_layout(out)
    assert main(resume + ["--set", changed]) == 2
    assert f"model_options.{key}:" in capsys.readouterr().err
    assert main(resume) == 0
    # and the run loads back from it (magnet_pyg.load_run), reproducing its test metric
    import magnet_pyg
    from magnet_pyg.evaluate import Evaluator
    ctx = magnet_pyg.load_run(out, graph_cache=None)
    again = Evaluator(ctx.data, (10, 20, 50)).evaluate(ctx.model, ctx.graph, "test")["ndcg@20"]
    assert again == pytest.approx(ctx.results["test"]["ndcg@20"], abs=1e-6)


def _fake_run(folder: Path, name: str, seed: int, valid: float) -> Path:
    run = folder / name / f"seed{seed}"
    run.mkdir(parents=True)
    metrics = {m: valid for m in ("recall@20", "ndcg@20", "recall@10", "ndcg@10")}
    (run / "results.json").write_text(json.dumps({
        "model": "lightgcn", "config": {"seed": seed, "model_options": {}}, "best_epoch": 3,
        "epochs": [{"train_seconds": 1.0, "eval_seconds": 0.5}] * 4, "valid": metrics, "test": metrics}))
    return run


def test_collect_keeps_records_and_replaces_same_seed(tmp_path):
    """A summary accumulates: runs whose folders are gone stay, a new folder of the same row and
    seed replaces its record, and an aggregate row cannot be shadowed silently."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import collect
    out = tmp_path / "summary.json"
    _fake_run(tmp_path / "a", "row", 0, 0.1)
    _fake_run(tmp_path / "a", "row", 1, 0.3)
    collect.main(["--dataset", "d", "--runs", str(tmp_path / "a" / "*" / "seed*"), "--json", str(out)])
    shutil.rmtree(tmp_path / "a")
    _fake_run(tmp_path / "b", "row", 1, 0.5)
    collect.main(["--dataset", "d", "--runs", str(tmp_path / "b" / "*" / "seed*"), "--json", str(out)])
    summary = json.loads(out.read_text())
    assert [(r["seed"], r["valid"]["ndcg@20"]) for r in summary["runs"]] == [(0, 0.1), (1, 0.5)]
    assert summary["rows"]["row"]["valid_ndcg@20"] == pytest.approx(0.3)
    collect.main(["--dataset", "d", "--runs", str(tmp_path / "b" / "*" / "seed*"), "--json", str(out), "--fresh"])
    assert [r["seed"] for r in json.loads(out.read_text())["runs"]] == [1]
    with pytest.raises(SystemExit, match="dataset 'd'"):
        collect.main(["--dataset", "other", "--json", str(out)])
    agg = tmp_path / "agg.json"
    agg.write_text(json.dumps({"row": {"model": "lightgcn", "seeds": 1, "best_epochs": [2],
                                       **{f"{s}_{m}": 0.2 for s in ("valid", "test")
                                          for m in ("recall@20", "ndcg@20", "recall@10", "ndcg@10")}}}))
    with pytest.raises(SystemExit, match="rename one of them"):
        collect.main(["--dataset", "d", "--from-sweep", str(agg), "--json", str(out)])


def _mmrec_epoch(epoch: int, valid_r: float, valid_n: float, test_r: float) -> str:
    return (f"04 Dec 02:55    INFO epoch {epoch} evaluating [time: 0.86s, valid_score: {valid_r:.6f}]\n"
            "04 Dec 02:55    INFO valid result: \n"
            f"recall@10: 0.0100    recall@20: {valid_r}    ndcg@10: 0.0050    ndcg@20: {valid_n}    \n"
            "04 Dec 02:55    INFO test result: \n"
            f"recall@10: 0.0100    recall@20: {test_r}    ndcg@10: 0.0050    ndcg@20: 0.0200    \n")


def test_authors_code_selection_rules():
    """The authors' rule keeps the best validation Recall@20 over the whole budget; the package's
    keeps the best validation NDCG@20 and stops after `patience` evaluations without a gain."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import authors_code
    log = "".join(_mmrec_epoch(*row) for row in [
        (0, 0.05, 0.020, 0.04), (1, 0.06, 0.030, 0.05), (2, 0.05, 0.025, 0.06),
        (3, 0.05, 0.029, 0.07), (4, 0.09, 0.031, 0.08)])
    curve = authors_code.parse_mmrec(log)
    assert [r["epoch"] for r in curve] == [0, 1, 2, 3, 4]
    assert curve[3]["valid"] == {"recall@10": 0.01, "recall@20": 0.05, "ndcg@10": 0.005, "ndcg@20": 0.029}
    assert authors_code.select(curve, "recall@20", None)["test"]["recall@20"] == 0.08
    assert authors_code.select(curve, "ndcg@20", 2)["epoch"] == 1      # stopped before epoch 4
    assert authors_code.select(curve, "ndcg@20", 3)["epoch"] == 4
    with pytest.raises(ValueError, match="log line 1: epoch 0 has no valid/test"):
        authors_code.parse_mmrec(log.replace("INFO test result: \n", "", 1))
    recgoat = ("[Test@0] {'recall': array([0.00262209]), 'ndcg': array([0.00083365])}\n"
               "Epoch 000: loss0.694-85.167s\n[Test@1] {'recall': array([0.0033]), 'ndcg': array([0.0011])}\n")
    assert authors_code.parse_recgoat(recgoat, 20) == [
        {"epoch": 0, "valid": {"recall@20": 0.00262209, "ndcg@20": 0.00083365}},
        {"epoch": 1, "valid": {"recall@20": 0.0033, "ndcg@20": 0.0011}}]
