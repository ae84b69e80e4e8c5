"""Helpers shared by the benchmark scripts: machine description, peak RSS, JSON output."""
from __future__ import annotations

import json
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch

RESULTS = Path(__file__).resolve().parent / "results"
_LOAD_AT_START = os.getloadavg()  # taken at import, before the benchmark loads the machine


def machine() -> Dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    import torch_geometric
    info = {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": mem_gb, "python": platform.python_version(),
            "torch": torch.__version__, "torch_geometric": torch_geometric.__version__,
            "torch_threads": torch.get_num_threads(), "load_avg_at_start": _LOAD_AT_START,
            "load_avg_at_end": os.getloadavg()}
    try:
        import faiss
        info["faiss"] = faiss.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def write(name: str, payload: Dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), **payload}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    print(json.dumps(payload, indent=2))
    return path


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so that wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_train_eval(epoch: Callable[[int], None], evaluate: Callable[[], Any], repeats: int,
                    device: torch.device) -> Tuple[List[float], List[float], Any]:
    """One untimed warm-up epoch and evaluation, then ``repeats`` timed (epoch, evaluation)
    pairs. Returns the epoch seconds, the evaluation seconds and the last evaluation result."""
    epoch(-1)
    evaluate()
    train_t, eval_t, res = [], [], None
    for r in range(repeats):
        t = time.perf_counter()
        epoch(r)
        sync(device)
        train_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        res = evaluate()
        sync(device)
        eval_t.append(time.perf_counter() - t)
    return train_t, eval_t, res
