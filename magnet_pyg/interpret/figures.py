r"""Matplotlib figures of the routing diagnostics, each drawn **from its JSON dict** (the
output of :func:`~magnet_pyg.interpret.epoch_dynamics`, :func:`split_routing_statistics`,
:func:`dual_view_gains` or :func:`explain_user`), so every number drawn is a number of that
dict. ``None`` values (undefined gains) are drawn as missing bars/points (NaN).

* :func:`dynamics_figure`: routing dynamics over training (paper Fig. 7 / 8 analogue);
* :func:`usage_figure`: expert usage, modality reliance, family proportions (Fig. 5);
* :func:`dual_view_figure`: DV-vs-SV gains per difficulty / activity bucket (Fig. 6);
* :func:`explain_figure`: group x family routing heatmap of a recommendation list (Fig. 14).

The Agg backend is used (no display needed).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["dynamics_figure", "usage_figure", "dual_view_figure", "explain_figure", "save"]

_NAN = float("nan")


def _num(v: Optional[float]) -> float:
    return _NAN if v is None else float(v)


def _nums(vs: Sequence[Optional[float]]) -> List[float]:
    return [_num(v) for v in vs]


def _mark_switch(ax, d: Dict[str, Any], label: bool = False) -> None:
    sw = d.get("switch") or {}
    if sw.get("position") is not None:
        ax.axvline(sw["position"], color="black", linestyle="--", linewidth=1.0,
                   label=f"stage switch (step {sw['step']})" if label else None)


def save(fig: Figure, path) -> None:
    """Save at 150 dpi and close."""
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


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
                linewidth=0.8, label="SpecScore (per step)")
    ax.plot(ep, d["entropy_norm"], marker="o", color="tab:blue",
            label=r"normalised entropy $\tilde H$ (epoch mean)")
    ax.plot(ep, d["spec_score"], marker="s", color="tab:orange", label=r"SpecScore $1-\tilde H$")
    _mark_switch(ax, d, label=True)
    ax.set(title="Routing entropy of mini-batch mean routing (Eq. 24)", xlabel="epoch",
           ylabel="normalised value (0-1)", ylim=(-0.02, 1.02))
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    ax.plot(ep, d["n_eff"], marker="o", label=r"$N_{eff}$ of mini-batch $\bar\pi$ (epoch mean)")
    ax.plot(ep, d["epoch_n_eff"], marker="s", label=r"$N_{eff}$ of epoch $\bar\pi$")
    _mark_switch(ax, d, label=True)
    ax.axhline(d["num_experts"], color="grey", linewidth=0.8, linestyle=":",
               label=f"E = {d['num_experts']}")
    ax.set(title="Effective number of experts (Eq. 25)", xlabel="epoch",
           ylabel="effective experts (count)", ylim=(0, d["num_experts"] + 0.5))
    ax.legend(fontsize=8)

    ax = axes[1, 0]
    ax.plot(ep, d["lambda_cov"], marker="o", label=r"$\lambda_{cov}$ (coverage, stage 1)")
    ax.plot(ep, d["lambda_conf"], marker="s", label=r"$\lambda_{conf}$ (confidence, stage 2)")
    _mark_switch(ax, d, label=True)
    ax.set(title="Routing regulariser weights (Eq. 31, epoch mean)", xlabel="epoch",
           ylabel="loss weight")
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    basis = "per pair" if d.get("basis") == "pair" else "of epoch mean routing"
    ax.plot(ep, d["winner_share"], marker="o", label=f"winner share ({basis})")
    ax.plot(ep, d["top3_mass"], marker="s", label=f"Top3Mass ({basis})")
    ax.plot(ep, d["top12_gap"], marker="^", label=f"top1-top2 gap ({basis})")
    ax.plot(ep, d["max_load"], marker="v", label="MaxLoad share")
    ax.plot(ep, d["hhi_norm"], marker="d", label="concentration (normalised HHI)")
    _mark_switch(ax, d, label=True)
    ax.set(title="Decisiveness and load (dense routing)", xlabel="epoch",
           ylabel="share of routing mass (0-1)", ylim=(-0.02, 1.02))
    ax.legend(fontsize=8)
    fig.suptitle(title or "MAGNET routing dynamics over training")
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
    ax.axhline(d["uniform_expert_mass"], color="grey", linestyle=":", linewidth=1, label="uniform 1/E")
    ax.set(title=f"(a) Expert usage: HHI {d['hhi']:.3f}", xlabel="expert (anchor group - family)",
           ylabel=r"mean routing mass $\bar\pi_e$")
    ax.tick_params(axis="x", rotation=60)
    ax.legend(fontsize=8)

    ax = axes[1]
    srcs = list(d["source_weight"])
    x = list(range(len(srcs)))
    if structured:
        w = 0.38
        ax.bar([i - w / 2 for i in x], [d["group_mass"][s] for s in srcs], width=w,
               color="tab:green", label="mass of experts anchored on the source")
        ax.bar([i + w / 2 for i in x], [d["source_weight"][s] for s in srcs], width=w,
               color="tab:olive", label=r"template-weighted share $\sum_e \bar\pi_e w_e[s]$")
        ax.set_title(f"(b) Modality reliance: content (A+S) {d['content_share']:.3f}, "
                     f"$N_{{eff}}$ {d['n_eff']:.2f} of {d['num_experts']}")
    else:
        ax.bar(x, [d["source_weight"][s] for s in srcs], color="tab:olive",
               label=r"template-weighted share $\sum_e \bar\pi_e w_e[s]$")
        ax.set_title(f"(b) Modality reliance: $N_{{eff}}$ {d['n_eff']:.2f} of {d['num_experts']}")
    ax.axhline(d["uniform_source_share"], color="grey", linestyle=":", linewidth=1,
               label="equal share 1/n")
    ax.set_xticks(x, srcs)
    ax.set(xlabel="source (modality group)", ylabel="share of routing mass", ylim=(0, 1))
    ax.legend(fontsize=8)

    if structured:
        ax = axes[2]
        fams = list(d["family_mass"])
        ax.bar(fams, [d["family_mass"][f] for f in fams], color="tab:purple")
        ax.set(title=f"(c) Family proportions: Div {d['div']:.3f}", xlabel="expert family",
               ylabel="routing mass of the family", ylim=(0, 1))
    split = d.get("split", "")
    fig.suptitle(title or f"MAGNET routing on the {split} split ({d.get('num_pairs', '?')} "
                 "interactions, dense routing before Top-K)")
    return fig


# ----------------------------------------------------------------------------- Fig. 6
def dual_view_figure(d: Dict[str, Any], title: str = "") -> Figure:
    """(a) relative N@20 gain of DV over SV per difficulty bucket, (b) per activity bucket,
    (c) interaction composition of the buckets, (d) ECDF of the per-user N@20 difference."""
    metric = d.get("metric", "ndcg@20").upper().replace("NDCG", "N")
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    for ax, key, tag in ((axes[0, 0], "difficulty", "(a) difficulty (visibility v)"),
                         (axes[0, 1], "activity", "(b) user activity")):
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
        ax.set(title=f"{tag}: DV vs SV", xlabel="bucket",
               ylabel=f"relative {metric} gain (%)")
    ax = axes[1, 0]
    x = list(range(3))
    w = 0.38
    ax.bar([i - w / 2 for i in x], d["difficulty"]["composition"], width=w, label="difficulty",
           color="tab:blue")
    ax.bar([i + w / 2 for i in x], d["activity"]["composition"], width=w, label="activity",
           color="tab:orange")
    ax.set_xticks(x, [f"{a} / {b}" for a, b in zip(d["difficulty"]["buckets"],
                                                    d["activity"]["buckets"])])
    ax.set(title="(c) Bucket composition of evaluation interactions", xlabel="bucket",
           ylabel="fraction of interactions", ylim=(0, 1))
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    ax.step(d["ecdf"]["x"], d["ecdf"]["y"], where="post", color="tab:blue")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set(title=f"(d) ECDF of per-user {metric} difference (DV - SV)",
           xlabel=f"per-user {metric} difference", ylabel="fraction of users", ylim=(0, 1.02))
    ov = d["overall"]
    g = ov.get("gain_pct")
    fig.suptitle(title or f"Dual-view diagnostics on {d.get('split', '')}: {metric} DV "
                 f"{ov['ndcg_dv']:.4f} vs SV {ov['ndcg_sv']:.4f}"
                 + (f" ({g:+.1f}%)" if g is not None else ""))
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
        ax.set_yticks(range(len(srcs)), srcs)
        for r, row in enumerate(grid):
            for c, v in enumerate(row):
                ax.text(c, r, f"{v:.2f}", ha="center", va="center",
                        color="white" if v > 0.6 * max(max(x) for x in grid) else "black")
        fig.colorbar(im, ax=ax, label="routing mass (cells sum to 1)")
        ax.set(xlabel="expert family", ylabel="anchor group (modality)",
               title=f"Routing mass: $N_{{eff}}$ {prof['n_eff']:.2f}, HHI {prof['hhi']:.3f}")
    else:
        ax.axis("off")
        ax.set_title("free experts: no group x family structure")

    ax = axes[1]
    if "grid" in prof:
        fams = list(prof["family_mass"])
        names = [f"family {f}" for f in fams] + [f"group {g}" for g in srcs]
        vals = [prof["family_mass"][f] for f in fams] + [prof["group_mass"][g] for g in srcs]
        ax.barh(names, vals, color=["tab:purple"] * len(fams) + ["tab:green"] * len(srcs))
        ax.invert_yaxis()
        ax.set(title="Family mass and modality mass (marginals)", xlabel="routing mass",
               xlim=(0, 1))
        top = sorted(prof["expert_mass"].items(), key=lambda kv: -kv[1])[:3]
        ax.text(0.98, 0.02, "top experts (mean $\\pi$):\n" + "\n".join(f"{k}: {v:.3f}" for k, v in top),
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
        ax.barh(ylabels, vals, left=left, color=colors(k), label=s)
        left = [x + v for x, v in zip(left, vals)]
    ax.invert_yaxis()
    ax.set(title=r"Modality contribution $\sum_{e\in\Gamma}\tilde\pi_e w_e[s]$",
           xlabel="share of the fused input", xlim=(0, 1))
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(srcs))
    what = (f"{d['top_n']} requested pair(s)" if d.get("mode") == "pairs"
            else f"top-{d['top_n']} recommendations")
    n = d['history_size']
    fig.suptitle(title or f"User {d['user']}: {what} ({n} training item{'' if n == 1 else 's'})")
    return fig
