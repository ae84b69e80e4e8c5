"""The PyG-style example scripts run end to end (short settings)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _module(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_moe_head_on_sage_trains_and_ranks_exactly(tmp_path):
    mod = _module("moe_head_on_sage")
    res = mod.main(["--data", "synthetic-tiny", "--epochs", "2", "--out", str(tmp_path)])
    assert res["model"] == "sage-moe" and 0 <= res["test"]["recall@20"] <= 1
    assert all("entropy_norm" in e and "stage" in e for e in res["epochs"])
    assert (tmp_path / "best.pt").exists() and (tmp_path / "results.json").exists()
    # the composed model's full ranking is the head's pairwise score on every pair
    from magnet_pyg.data import modality_features, num_items, num_users, synthetic
    data = synthetic("tiny", seed=0)
    dims = {m: int(x.size(1)) for m, x in modality_features(data).items()}
    for conv in ("sage", "gat"):
        torch.manual_seed(0)
        model = mod.SageMoE(num_users(data), num_items(data), dims, channels=8, conv=conv).eval()
        state = model.inference(model.prepare(data))
        I = num_items(data)
        full = model.score(state, torch.arange(3))
        pairs = torch.stack([model.score(state, torch.full((I,), u), torch.arange(I)) for u in range(3)])
        assert torch.allclose(full, pairs, atol=1e-5)


def test_magnet_tiktok_report_example(tiktok_path, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(EXAMPLES / "magnet_tiktok_report.py"), "--data", str(tiktok_path),
                           "--epochs", "1", "--out", str(out), "--threads", "2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MAGNET-DV" in proc.stdout and "MAGNET-SV" in proc.stdout
    report = json.loads((out / "dual" / "report" / "report.json").read_text())
    assert report and (out / "dual" / "report" / "dynamics.png").exists()
    assert (out / "dual" / "report" / "dynamics.pdf").exists()
