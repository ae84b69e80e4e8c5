r"""Matplotlib figures of the routing diagnostics, each drawn **from its JSON dict** (the
output of :func:`~magnet_pyg.interpret.epoch_dynamics`, :func:`split_routing_statistics`,
:func:`dual_view_gains` or :func:`explain_user`), so every number drawn is a number of that
dict. ``None`` values (undefined gains) are drawn as missing bars/points (NaN).

* :func:`dynamics_figure`: routing dynamics over training (paper Fig. 7 / 8 analogue);
* :func:`usage_figure`: expert usage, modality reliance, family proportions (Fig. 5);
* :func:`dual_view_figure`: DV-vs-SV gains per difficulty / activity bucket (Fig. 6);
* :func:`explain_figure`: group x family routing heatmap of a recommendation list (Fig. 14).

Every legend entry is spelled out, and every figure carries a caption under its panels that
defines each term and abbreviation it shows (the same definitions as ``docs/figures.md``).
:func:`save` writes a figure in several formats at once (default PNG and PDF).

The Agg backend is used (no display needed).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["dynamics_figure", "usage_figure", "dual_view_figure", "explain_figure", "save",
           "check_formats", "FORMATS", "GLOSSARY"]

#: formats :func:`save` writes by default (a raster for quick viewing, a vector for papers)
FORMATS: Tuple[str, ...] = ("png", "pdf")
_SUPPORTED = ("png", "pdf", "svg")
_NAN = float("nan")

#: definition of every term the figures show (the figure captions quote these)
GLOSSARY: Dict[str, str] = {
    "pi": r"$\pi$ = routing distribution: the router's probability for each of the E experts of "
          "one (user, item) pair, dense, before Top-K selection",
    "pibar": r"$\bar\pi$ = mean routing: $\pi$ averaged over pairs (a mini-batch, an epoch or an "
             r"evaluation split); $\bar\pi_e$ is the routing mass of expert e",
    "entropy": r"$\tilde H$ = normalised routing entropy $H(\bar\pi) / \log E$ (0 = one expert, "
               "1 = uniform)",
    "spec": r"SpecScore = $1 - \tilde H$, the specialisation of the routing",
    "neff": r"$N_{eff} = \exp H(\bar\pi)$, the effective number of experts in use (1 .. E)",
    "hhi": "HHI = Herfindahl-Hirschman index, the sum of squared routing masses (1/E = uniform, "
           "1 = one expert); normalised HHI rescales it to 0 .. 1",
    "div": "Div = normalised entropy of the mean routing over experts (0 = one expert, 1 = uniform)",
    "E": "E = number of experts",
    "stages": r"stage 1 trains with the coverage regulariser (weight $\lambda_{cov}$, spreads the "
              r"routing), stage 2 with the confidence regulariser (weight $\lambda_{conf}$, "
              "sharpens it); the dashed line marks the switch",
    "decisive": "winner share = mean top-1 routing probability; Top3Mass = mean probability on the "
                "top-3 experts; top1-top2 gap = mean margin between the two most probable experts; "
                "MaxLoad share = largest expert's share of the mean routing",
    "basis": "'per pair' statistics average over the pairs' own routing; 'of epoch mean routing' "
             "ones are computed on the epoch's mean routing",
    "B": "B = behaviour source: the user and item embeddings z of the graph encoder over the "
         "interactions (the collaborative signal)",
    "content": "content sources: the item content modalities (for example image, text), as "
               "modality cues of items and of users (mean over their training items)",
    "expert": "expert label '<anchor source>-<family>': the source its template weights most or "
              "least, and its template family",
    "families": "families: Dom = dominant (most weight on the anchor source), Bal = balanced "
                "(near-equal weights), Com = complementary (little weight on the anchor, the rest "
                "on the other sources)",
    "group": "group mass of a source = routing mass of the experts anchored on it",
    "share": r"template-weighted share of source s = $\sum_e \bar\pi_e w_e[s]$, with $w_e[s]$ "
             "the template weight of expert e on s: how much of the fused input comes from s",
    "DV": "DV = MAGNET dual view (observed user-item graph + content-induced edges), SV = single "
          "view (observed graph only)",
    "ndcg": "NDCG@k = normalised discounted cumulative gain of the top-k list; relative gain = "
            "(DV - SV) / SV x 100",
    "difficulty": "difficulty buckets by visibility v = share of an interaction's item's "
                  "content-kNN neighbours among the user's training items: Easy v >= 0.5, "
                  "Medium 0 < v < 0.5, Hard v = 0",
    "activity": "activity buckets: evaluated users sorted by number of training interactions, "
                "cut into three equal parts: Head (most active), Mid, Tail",
    "ecdf": "ECDF = empirical cumulative distribution function over users",
    "contribution": "modality contribution = share of each source in the fused input actually "
                    "used for the score (selected experts, renormalised routing x template weights)",
    "heldout": "(test) / (valid): the item is one of the user's held-out test / validation "
               "interactions",
}


def _caption(fig: Figure, keys: Sequence[str], extra: Sequence[str] = ()) -> None:
    """Glossary caption under the panels (kept by ``bbox_inches='tight'``)."""
    lines = list(extra) + [GLOSSARY[k] for k in keys]
    fig.text(0.0, -0.01, "\n".join("- " + ln for ln in lines), ha="left", va="top", fontsize=7.5,
             wrap=True)


def _source_label(name: str, behaviour: str) -> str:
    return f"{name} (behaviour)" if name == behaviour else f"{name} (content)"


def _num(v: Optional[float]) -> float:
    return _NAN if v is None else float(v)


def _nums(vs: Sequence[Optional[float]]) -> List[float]:
    return [_num(v) for v in vs]


def _mark_switch(ax, d: Dict[str, Any], label: bool = False) -> None:
    sw = d.get("switch") or {}
    if sw.get("position") is not None:
        ax.axvline(sw["position"], color="black", linestyle="--", linewidth=1.0,
                   label=(f"stage switch: coverage -> confidence regulariser (step {sw['step']})"
                          if label else None))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_formats(formats: Sequence[str]) -> List[str]:
    """``formats`` as lower-case names; a :class:`ValueError` unless they are distinct values
    among ``png``, ``pdf``, ``svg`` (at least one)."""
    if isinstance(formats, str):
        formats = [formats]
    out = [str(f).lower().lstrip(".") for f in formats]
    if not out or any(f not in _SUPPORTED for f in out) or len(set(out)) != len(out):
        raise ValueError(f"figure formats must be distinct values among {list(_SUPPORTED)}, "
                         f"got {list(formats)}")
    return out


def save(fig: Figure, path: Union[str, Path], formats: Sequence[str] = FORMATS) -> List[Path]:
    """Write ``fig`` at 150 dpi once per format and close it.

    Args:
        fig: the figure.
        path: the file path without suffix (a suffix among ``png``/``pdf``/``svg`` is dropped):
            ``RUN/report/usage`` writes ``usage.png`` and ``usage.pdf``.
        formats: any of ``"png"``, ``"pdf"``, ``"svg"``, at least one.

    Each file is written to a temporary file beside it and then renamed, so a reader never
    sees half a figure.

    Returns:
        The written paths, in ``formats`` order.
    """
    try:
        formats = check_formats(formats)
    except ValueError:
        plt.close(fig)
        raise
    path = Path(path)
    if path.suffix.lower().lstrip(".") in _SUPPORTED:
        path = path.with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    try:
        for fmt in formats:
            target = path.with_name(f"{path.name}.{fmt}")
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    fig.savefig(f, format=fmt, dpi=150, bbox_inches="tight")
                os.chmod(tmp, 0o666 & ~_umask())  # the permissions of a plainly created file
                os.replace(tmp, target)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
            out.append(target)
    finally:
        plt.close(fig)
    return out


# ----------------------------------------------------------------------------- Fig. 7 / 8
def dynamics_figure(d: Dict[str, Any], title: str = "") -> Figure:
    """Four panels over epochs: normalised routing entropy and SpecScore; effective number of
    experts; regulariser weights; decisiveness / load statistics. The stage switch is a
    dashed vertical line."""
    ep = d["epoch"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    ax = axes[0, 0]
    if "steps" in d:
        ax.plot(d["steps"]["position"], d["steps"]["spec_score"], color="tab:orange", alpha=0.3,
                linewidth=0.8, label=r"SpecScore $1-\tilde H$ of each training step")
    ax.plot(ep, d["entropy_norm"], marker="o", color="tab:blue",
            label=r"normalised routing entropy $\tilde H$ (epoch mean)")
    ax.plot(ep, d["spec_score"], marker="s", color="tab:orange",
            label=r"SpecScore $1-\tilde H$ (epoch mean)")
    _mark_switch(ax, d, label=True)
    ax.set(title="Routing entropy of mini-batch mean routing (Eq. 24)", xlabel="epoch",
           ylabel="normalised value (0-1)", ylim=(-0.02, 1.02))
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    ax.plot(ep, d["n_eff"], marker="o",
            label=r"$N_{eff}$ of each mini-batch's mean routing $\bar\pi$ (epoch mean)")
    ax.plot(ep, d["epoch_n_eff"], marker="s", label=r"$N_{eff}$ of the epoch's mean routing $\bar\pi$")
    _mark_switch(ax, d, label=True)
    ax.axhline(d["num_experts"], color="grey", linewidth=0.8, linestyle=":",
               label=f"E = {d['num_experts']} experts (the maximum)")
    ax.set(title="Effective number of experts (Eq. 25)", xlabel="epoch",
           ylabel="effective experts (count)", ylim=(0, d["num_experts"] + 0.5))
    ax.legend(fontsize=8)

    ax = axes[1, 0]
    ax.plot(ep, d["lambda_cov"], marker="o", label=r"$\lambda_{cov}$: coverage loss weight (stage 1)")
    ax.plot(ep, d["lambda_conf"], marker="s",
            label=r"$\lambda_{conf}$: confidence loss weight (stage 2)")
    _mark_switch(ax, d, label=True)
    ax.set(title="Routing regulariser weights (Eq. 31, epoch mean)", xlabel="epoch",
           ylabel="loss weight")
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    basis = "per pair" if d.get("basis") == "pair" else "of epoch mean routing"
    ax.plot(ep, d["winner_share"], marker="o", label=f"winner share: top-1 probability ({basis})")
    ax.plot(ep, d["top3_mass"], marker="s", label=f"Top3Mass: probability on the top-3 experts ({basis})")
    ax.plot(ep, d["top12_gap"], marker="^", label=f"top1-top2 gap: confidence margin ({basis})")
    ax.plot(ep, d["max_load"], marker="v", label="MaxLoad share: largest expert's routing mass")
    ax.plot(ep, d["hhi_norm"], marker="d", label="concentration: normalised HHI")
    _mark_switch(ax, d, label=True)
    ax.set(title="Decisiveness and load (dense routing)", xlabel="epoch",
           ylabel="share of routing mass (0-1)", ylim=(-0.02, 1.02))
    ax.legend(fontsize=8)
    fig.suptitle(title or "MAGNET routing dynamics over training")
    _caption(fig, ("pi", "pibar", "entropy", "spec", "neff", "hhi", "E", "stages", "decisive", "basis"))
    return fig


# ----------------------------------------------------------------------------- Fig. 5
def usage_figure(d: Dict[str, Any], title: str = "") -> Figure:
    """Expert usage (mean routing mass per expert), modality reliance (mass per anchor group and
    the content share), family proportions (with Div)."""
    structured = "group_mass" in d
    fig, axes = plt.subplots(1, 3 if structured else 2, figsize=(15 if structured else 11, 4.5),
                             constrained_layout=True)
    ax = axes[0]
    labels = list(d["expert_mass"])
    ax.bar(labels, [d["expert_mass"][k] for k in labels], color="tab:blue")
    ax.axhline(d["uniform_expert_mass"], color="grey", linestyle=":", linewidth=1,
               label="uniform routing: 1/E per expert")
    ax.set(title=f"(a) Expert usage: HHI {d['hhi']:.3f}", xlabel="expert (anchor source - family)",
           ylabel=r"mean routing mass $\bar\pi_e$")
    ax.tick_params(axis="x", rotation=60)
    ax.legend(fontsize=8)

    ax = axes[1]
    srcs = list(d["source_weight"])
    behaviour = srcs[0]
    x = list(range(len(srcs)))
    if structured:
        w = 0.38
        ax.bar([i - w / 2 for i in x], [d["group_mass"][s] for s in srcs], width=w,
               color="tab:green", label="group mass: routing mass of the experts anchored on the source")
        ax.bar([i + w / 2 for i in x], [d["source_weight"][s] for s in srcs], width=w,
               color="tab:olive",
               label=r"template-weighted share of the source in the fused input, $\sum_e \bar\pi_e w_e[s]$")
        content = " + ".join(srcs[1:])
        ax.set_title(f"(b) Modality reliance: experts anchored on content ({content}) "
                     f"{d['content_share']:.3f},\n$N_{{eff}}$ {d['n_eff']:.2f} of {d['num_experts']} experts")
    else:
        ax.bar(x, [d["source_weight"][s] for s in srcs], color="tab:olive",
               label=r"template-weighted share of the source in the fused input, $\sum_e \bar\pi_e w_e[s]$")
        ax.set_title(f"(b) Modality reliance: $N_{{eff}}$ {d['n_eff']:.2f} of {d['num_experts']} experts")
    ax.axhline(d["uniform_source_share"], color="grey", linestyle=":", linewidth=1,
               label=f"equal share: 1/{len(srcs)} per source")
    ax.set_xticks(x, [_source_label(s, behaviour) for s in srcs])
    ax.set(xlabel="source", ylabel="share of routing mass", ylim=(0, 1))
    ax.legend(fontsize=8)

    if structured:
        ax = axes[2]
        fams = list(d["family_mass"])
        ax.bar(fams, [d["family_mass"][f] for f in fams], color="tab:purple")
        ax.set(title=f"(c) Family proportions: Div {d['div']:.3f}",
               xlabel="expert family (Dom dominant, Bal balanced, Com complementary)",
               ylabel="routing mass of the family", ylim=(0, 1))
    split = d.get("split", "")
    fig.suptitle(title or f"MAGNET routing on the {split} split ({d.get('num_pairs', '?')} "
                 "interactions, dense routing before Top-K)")
    keys = ("pi", "pibar", "B", "content", "expert", "families", "group", "share", "hhi", "neff",
            "div", "E") if structured else ("pi", "pibar", "B", "content", "share", "hhi", "neff", "E")
    _caption(fig, keys, ([] if structured else
                         ["free experts: learned source mixtures, without anchor or family"]))
    return fig


# ----------------------------------------------------------------------------- Fig. 6
def dual_view_figure(d: Dict[str, Any], title: str = "") -> Figure:
    """(a) relative N@20 gain of DV over SV per difficulty bucket, (b) per activity bucket,
    (c) interaction composition of the buckets, (d) ECDF of the per-user N@20 difference."""
    metric = d.get("metric", "ndcg@20").upper()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    for ax, key, tag in ((axes[0, 0], "difficulty", "(a) difficulty buckets (visibility v)"),
                         (axes[0, 1], "activity", "(b) user-activity buckets")):
        s = d[key]
        x = list(range(len(s["buckets"])))
        ax.bar(x, _nums(s["gain_pct"]),
               color=["tab:green" if (g or 0) >= 0 else "tab:red" for g in s["gain_pct"]])
        ax.set_xticks(x, [f"{b}\nDV {nd:.3f} / SV {ns:.3f}\n({n} users)" for b, nd, ns, n in
                          zip(s["buckets"], s["ndcg_dv"], s["ndcg_sv"], s["num_users"])])
        for i, g in zip(x, s["gain_pct"]):
            ax.annotate("n/a" if g is None else f"{g:+.1f}%", (i, 0 if g is None else g),
                        xytext=(0, 3 if (g or 0) >= 0 else -3), textcoords="offset points",
                        ha="center", va="bottom" if (g or 0) >= 0 else "top", fontsize=9)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set(title=f"{tag}: dual view (DV) vs single view (SV)", xlabel="bucket",
               ylabel=f"relative {metric} gain of DV over SV (%)")
    ax = axes[1, 0]
    x = list(range(3))
    w = 0.38
    ax.bar([i - w / 2 for i in x], d["difficulty"]["composition"], width=w,
           label="difficulty buckets (Easy / Medium / Hard, by visibility v)", color="tab:blue")
    ax.bar([i + w / 2 for i in x], d["activity"]["composition"], width=w,
           label="activity buckets (Head / Mid / Tail, by training interactions)", color="tab:orange")
    ax.set_xticks(x, [f"{a} / {b}" for a, b in zip(d["difficulty"]["buckets"],
                                                    d["activity"]["buckets"])])
    ax.set(title="(c) Bucket composition of evaluation interactions", xlabel="bucket",
           ylabel="fraction of interactions", ylim=(0, 1))
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    ax.step(d["ecdf"]["x"], d["ecdf"]["y"], where="post", color="tab:blue")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set(title=f"(d) Cumulative distribution (ECDF) of the per-user {metric} difference DV - SV",
           xlabel=f"per-user {metric} difference", ylabel="fraction of users", ylim=(0, 1.02))
    ov = d["overall"]
    g = ov.get("gain_pct")
    fig.suptitle(title or f"Dual-view diagnostics on {d.get('split', '')}: {metric} DV "
                 f"{ov['ndcg_dv']:.4f} vs SV {ov['ndcg_sv']:.4f}"
                 + (f" ({g:+.1f}%)" if g is not None else ""))
    _caption(fig, ("DV", "ndcg", "difficulty", "activity", "ecdf"),
             [f"bucket tick labels: the bucket, its {metric} under DV / SV, and its number of users"])
    return fig


# ----------------------------------------------------------------------------- Fig. 14
def explain_figure(d: Dict[str, Any], title: str = "") -> Figure:
    """Group x family routing-mass heatmap of the explained list (cells sum to 1) with its
    marginals, and the per-recommendation modality contributions."""
    prof = d["list"]
    items = d["items"]
    srcs = list(d["sources"])
    fig, axes = plt.subplots(1, 3, figsize=(16, max(4.5, 0.45 * len(items) + 1.5)),
                             constrained_layout=True)
    ax = axes[0]
    if "grid" in prof:
        grid = prof["grid"]
        im = ax.imshow(grid, cmap="Blues", vmin=0, vmax=max(max(r) for r in grid) or 1)
        ax.set_xticks(range(len(d["families"])), d["families"])
        ax.set_yticks(range(len(srcs)), [_source_label(g, srcs[0]) for g in srcs])
        for r, row in enumerate(grid):
            for c, v in enumerate(row):
                ax.text(c, r, f"{v:.2f}", ha="center", va="center",
                        color="white" if v > 0.6 * max(max(x) for x in grid) else "black")
        fig.colorbar(im, ax=ax, label="routing mass (cells sum to 1)")
        ax.set(xlabel="expert family", ylabel="anchor source (group)",
               title=f"Routing mass: $N_{{eff}}$ {prof['n_eff']:.2f}, HHI {prof['hhi']:.3f}")
    else:
        ax.axis("off")
        ax.set_title("free experts: no group x family structure")

    ax = axes[1]
    if "grid" in prof:
        fams = list(prof["family_mass"])
        names = ([f"family {f}" for f in fams]
                 + [f"group {_source_label(g, srcs[0])}" for g in srcs])
        vals = [prof["family_mass"][f] for f in fams] + [prof["group_mass"][g] for g in srcs]
        ax.barh(names, vals, color=["tab:purple"] * len(fams) + ["tab:green"] * len(srcs))
        ax.invert_yaxis()
        ax.set(title="Family mass and modality mass (marginals)", xlabel="routing mass",
               xlim=(0, 1))
        top = sorted(prof["expert_mass"].items(), key=lambda kv: -kv[1])[:3]
        ax.text(0.98, 0.02, "top experts (mean routing probability $\\pi$):\n" + "\n".join(f"{k}: {v:.3f}" for k, v in top),
                transform=ax.transAxes, ha="right", va="bottom", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "grey"})
    else:
        ax.axis("off")

    ax = axes[2]
    ylabels = []
    for a in items:
        tag = " (test)" if a.get("in_test") else " (valid)" if a.get("in_valid") else ""
        rk = a.get("rank")
        ylabels.append(f"#{rk} item {a['item']}{tag}" if rk is not None else f"item {a['item']}{tag}")
    left = [0.0] * len(items)
    colors = plt.get_cmap("tab10")
    for k, s in enumerate(srcs):
        vals = [a["modality_contribution"][s] for a in items]
        ax.barh(ylabels, vals, left=left, color=colors(k), label=_source_label(s, srcs[0]))
        left = [x + v for x, v in zip(left, vals)]
    ax.invert_yaxis()
    ax.set(title=r"Modality contribution $\sum_{e\in\Gamma}\tilde\pi_e w_e[s]$",
           xlabel="share of the fused input", xlim=(0, 1))
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(srcs))
    what = (f"{d['top_n']} requested pair(s)" if d.get("mode") == "pairs"
            else f"top-{d['top_n']} recommendations")
    n = d['history_size']
    fig.suptitle(title or f"User {d['user']}: {what} ({n} training item{'' if n == 1 else 's'})")
    keys = (("pi", "B", "content", "expert", "families", "group", "neff", "hhi", "contribution",
             "heldout") if "grid" in prof else ("pi", "B", "content", "contribution", "heldout"))
    _caption(fig, keys, ["heatmap: routing mass of the listed pairs per anchor source (row) and "
                         "family (column), cells summing to 1" if "grid" in prof else
                         "free experts: learned source mixtures, without anchor or family"])
    return fig
