r"""Write the routing report of a MAGNET run, and explain one user's recommendations.

:func:`write_report` writes into ``RUN/report/``:

* ``report.json``: every number drawn, in sections ``dynamics`` (:func:`epoch_dynamics`),
  ``routing`` (:func:`split_routing_statistics`) and, with a comparison run, ``dual_view``
  (:func:`dual_view_gains`), plus ``run`` metadata;
* ``dynamics`` (Fig. 7/8 analogue), ``usage`` (Fig. 5), ``dual_view`` (Fig. 6), each as
  ``.png`` and ``.pdf`` (``formats``, default :data:`~magnet_pyg.interpret.figures.FORMATS`).

:func:`write_explanation` writes ``explain_user<U>.json`` and its figure (Fig. 14 analogue).

Each figure is drawn from the JSON text after a round trip (``json.loads(json.dumps(...))``),
so the figure shows exactly the numbers in the file; its caption defines every term it
shows (see ``docs/figures.md``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from .attribution import explain_user
from .buckets import dual_view_gains
from .figures import FORMATS, check_formats, dual_view_figure, dynamics_figure, explain_figure, save, usage_figure
from .run import RunContext, load_run
from .statistics import epoch_dynamics, split_routing_statistics

__all__ = ["build_report", "write_report", "write_explanation", "format_explanation"]

RunLike = Union[str, Path, RunContext]


def _ctx(run: RunLike) -> RunContext:
    ctx = run if isinstance(run, RunContext) else load_run(run)
    if ctx.results.get("model", "magnet") != "magnet" or not hasattr(ctx.model, "head"):
        raise ValueError(f"run '{ctx.run_dir}' trained model '{ctx.results.get('model')}'; routing "
                         "interpretability needs a MAGNET run (recommend and export work for any run)")
    return ctx


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN / inf become ``None``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _roundtrip(obj: Any) -> Any:
    return json.loads(json.dumps(_clean(obj)))


def _same_data(a: RunContext, b: RunContext) -> None:
    ka = {k: a.config.get(k) for k in ("data", "data_seed", "resplit_seed")}
    kb = {k: b.config.get(k) for k in ("data", "data_seed", "resplit_seed")}
    if ka != kb:
        raise ValueError(f"the runs use different data ({ka} vs {kb}); a DV/SV comparison needs "
                         "the same dataset and split")


def build_report(run: RunLike, compare: Optional[RunLike] = None, split: str = "test",
                 k: int = 20) -> Dict[str, Any]:
    """All report numbers of a MAGNET run (see the module docstring), JSON-ready.

    Args:
        run: a run folder or a :class:`RunContext` (the dual-view run when comparing).
        compare: the single-view run to compare with (same data), or ``None``.
        split: ``"valid"`` or ``"test"``.
        k: NDCG cut-off of the dual-view diagnostics.
    """
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got '{split}'")
    ctx = _ctx(run)
    opts = ctx.model_options
    rep: Dict[str, Any] = {"run": {"dir": str(ctx.run_dir) if ctx.run_dir else None,
                                   "dataset": ctx.results.get("dataset"),
                                   "view": opts.get("view"), "best_epoch": ctx.results.get("best_epoch"),
                                   "test": ctx.results.get("test"), "split": split}}
    history = ctx.results.get("epochs") or []
    if any("expert_mass" in r for r in history):
        rep["dynamics"] = epoch_dynamics(history)
    rep["routing"] = split_routing_statistics(ctx.model, ctx.data, split, state=ctx.state)
    if compare is not None:
        other = _ctx(compare)
        _same_data(ctx, other)
        knn_k = int(opts.get("knn_k") or 20)
        gains = dual_view_gains(ctx.score_fn(), other.score_fn(), ctx.data, split, k=k, knn_k=knn_k,
                                mask_valid_in_test=bool(ctx.config.get("mask_valid_in_test", False)))
        gains["dv_run"] = rep["run"]["dir"]
        gains["sv_run"] = str(other.run_dir) if other.run_dir else None
        gains["views"] = [opts.get("view"), other.model_options.get("view")]
        if gains["views"] != ["dual", "single"]:
            gains["note"] = (f"expected a dual-view run compared with a single-view run, got views "
                             f"{gains['views']}")
        rep["dual_view"] = gains
    return _roundtrip(rep)


def _save(fig, path: Path, name: str, files: Dict[str, str], formats: Sequence[str]) -> None:
    """Write ``fig`` in ``formats``; ``files[name]`` is the first file, ``files[name_<fmt>]``
    each further one."""
    for i, written in enumerate(save(fig, path, formats)):
        files[name if i == 0 else f"{name}_{written.suffix.lstrip('.')}"] = str(written)


def write_report(run: RunLike, compare: Optional[RunLike] = None, split: str = "test",
                 out_dir: Optional[Union[str, Path]] = None, k: int = 20,
                 formats: Sequence[str] = FORMATS) -> Dict[str, Any]:
    """:func:`build_report`, then write ``report.json`` and the figures (one file per format
    of ``formats``) into ``out_dir`` (default ``RUN/report``). Returns the report dict with
    ``files`` (written paths: ``files["usage"]`` is the first format, ``files["usage_pdf"]``
    and so on the others)."""
    formats = check_formats(formats)
    ctx = _ctx(run)
    rep = build_report(ctx, compare, split, k)
    if out_dir is None:
        if ctx.run_dir is None:
            raise ValueError("out_dir is needed for an in-memory run")
        out_dir = ctx.run_dir / "report"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: Dict[str, str] = {"json": str(out / "report.json")}
    name = rep["run"].get("dataset") or ""
    if "dynamics" in rep:
        _save(dynamics_figure(rep["dynamics"], f"MAGNET routing dynamics over training ({name})"),
              out / "dynamics", "dynamics", files, formats)
    _save(usage_figure(rep["routing"]), out / "usage", "usage", files, formats)
    if "dual_view" in rep:
        _save(dual_view_figure(rep["dual_view"]), out / "dual_view", "dual_view", files, formats)
    rep["files"] = files
    (out / "report.json").write_text(json.dumps(rep, indent=2) + "\n")
    return rep


def format_explanation(d: Dict[str, Any]) -> str:
    """Plain-text table of :func:`explain_user`'s output."""
    srcs = d["sources"]
    lines = [f"user {d['user']}: {d['history_size']} training items, {d['num_valid']} valid, "
             f"{d['num_test']} test; "
             + (f"top-{d['top_n']} recommendations (training items masked)" if d.get("mode") != "pairs"
                else f"{d['top_n']} requested pair(s); rank among non-training items"),
             f"{'rank':>4} {'item':>7} {'score':>9} {'held-out':>8} {'N_eff':>6} {'HHI':>6}  "
             f"{'top experts (pi / renormalised weight)':<52} modality contribution"]
    for a in d["items"]:
        held = "test" if a["in_test"] else "valid" if a["in_valid"] else "train" if a["in_train"] else ""
        top = ", ".join(f"{t['expert']} {t['pi']:.2f}/{t['weight']:.2f}" for t in a["top_experts"])
        contrib = " ".join(f"{s} {a['modality_contribution'][s]:.2f}" for s in srcs)
        rank = "-" if a["rank"] is None else str(a["rank"])
        lines.append(f"{rank:>4} {a['item']:>7} {a['score']:>9.4f} {held:>8} {a['n_eff']:>6.2f} "
                     f"{a['hhi']:>6.3f}  {top:<52} {contrib}")
    p = d.get("list")
    if p:
        lines.append(f"list: N_eff {p['n_eff']:.2f}, HHI {p['hhi']:.3f}, Div {p['div']:.3f}")
        if "group_mass" in p:
            lines.append("  modality mass: " + ", ".join(f"{g} {v:.3f}" for g, v in p["group_mass"].items())
                         + f"; content share {p['content_share']:.3f}")
            lines.append("  family mass:   " + ", ".join(f"{f} {v:.3f}" for f, v in p["family_mass"].items()))
            lines.append("  group x family (rows " + "/".join(srcs) + ", cols "
                         + "/".join(d["families"]) + "):")
            for s, row in zip(srcs, p["grid"]):
                lines.append(f"    {s:>10} " + " ".join(f"{v:.3f}" for v in row))
    return "\n".join(lines)


def write_explanation(run: RunLike, user: int, top_n: int = 10,
                      items: Optional[List[int]] = None,
                      out_dir: Optional[Union[str, Path]] = None,
                      formats: Sequence[str] = FORMATS) -> Dict[str, Any]:
    """:func:`explain_user` for a run, written as ``explain_user<U>.json`` and its figure (one
    file per format of ``formats``) into ``out_dir`` (default ``RUN/report``). Returns the dict
    with ``files`` (``files["figure"]`` the first format, ``files["figure_pdf"]`` ...)."""
    formats = check_formats(formats)
    ctx = _ctx(run)
    d = _roundtrip(explain_user(ctx.model, ctx.data, user, top_n, state=ctx.state, items=items))
    if out_dir is None:
        if ctx.run_dir is None:
            raise ValueError("out_dir is needed for an in-memory run")
        out_dir = ctx.run_dir / "report"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"explain_user{int(user)}" + ("" if items is None else
                                         "_items" + "-".join(str(int(i)) for i in items[:5]))
    d["files"] = {"json": str(out / f"{stem}.json")}
    _save(explain_figure(d), out / stem, "figure", d["files"], formats)
    (out / f"{stem}.json").write_text(json.dumps(d, indent=2) + "\n")
    return d
