r"""Triplet templates and the structured expert pool of MAGNET (Section 3.3.2, Eq. 12-15).

Sources are in the **global order** ``[B, A, S]`` = ``[behaviour, modality 1, modality 2]``
(the modality names are arbitrary, for example ``["image", "audio"]``). A type-level template
gives a canonical triplet ``[anchor, aux1, aux2]``:

* Dom (Eq. 12): :math:`(1-\alpha)[\tfrac12, \tfrac14, \tfrac14] + \alpha[1, 0, 0]`
* Bal (Eq. 13): :math:`[\tfrac13 + \tfrac{\beta}{6}, \tfrac13 - \tfrac{\beta}{12}, \tfrac13 - \tfrac{\beta}{12}]`
* Com (Eq. 14): :math:`[\epsilon, (1-\epsilon)\delta, (1-\epsilon)(1-\delta)]`

and the fixed permutation :math:`P_g` of group (anchor) ``g`` places it in global order
(Eq. 15). **Auxiliary order per anchor** (our decision, the paper does not state it):

============  ======  ======  ======
anchor ``g``  slot 0  aux1    aux2
============  ======  ======  ======
B             B       A       S
A             A       B       S
S             S       A       B
============  ======  ======  ======

i.e. the auxiliaries follow the priority ``A > B > S``. With this order :math:`\delta`
(weight of aux1 in Com) keeps one meaning in every group: raising :math:`\delta` moves mass
towards A and away from S (B-Com: A up / S down; A-Com: B up / S down; S-Com: A up / B down).
Summed over the Com family, A receives :math:`\epsilon + 2(1-\epsilon)\delta`, S receives
:math:`\epsilon + 2(1-\epsilon)(1-\delta)` and B a constant 1, so :math:`\delta` is exactly the
"auxiliary A/S split" of Table 3. Dom and Bal are symmetric in the two auxiliaries, so the order
does not matter for them.

**Pool.** Row ``e`` of the ``[E, 3]`` weight matrix is expert ``(g, t, r)`` with
``e = (g * T + t) * p + r``: group-major over ``[B, A, S]``, families in the canonical order
``Dom, Bal, Com`` (only those selected, ``T`` of them), each replicated ``p`` times
(expert splitting, ``E = 3 T p``; Section 4.8). The family compositions of Section 4.8 are
``"bal"`` (E = 3), ``"bal+dom"``, ``"bal+com"``, ``"dom+com"`` (E = 6) and ``"full"`` (E = 9).

**More or fewer modalities** (our extension; with two modalities it is exactly the paper).
With ``M`` content modalities there are ``M + 1`` sources and groups and the templates become
Dom :math:`(1-\alpha)[\tfrac12, \tfrac1{2M}, \dots] + \alpha e_0`,
Bal :math:`[\tfrac1{M+1} + \tfrac\beta6, \tfrac1{M+1} - \tfrac{\beta}{6M}, \dots]`,
Com :math:`[\epsilon, (1-\epsilon)\delta, \tfrac{(1-\epsilon)(1-\delta)}{M-1}, \dots]`
(``M = 1``: :math:`[\epsilon, 1-\epsilon]`, :math:`\delta` unused); the auxiliaries follow the
priority ``modality 1 > B > modality 2 > ... > modality M``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = [
    "FAMILIES", "FAMILY_COMPOSITIONS", "dom_template", "bal_template", "com_template",
    "canonical_template", "aux_order", "group_permutation", "permute_to_global",
    "ExpertPool", "triplet_expert_pool",
]

#: expert types (families), canonical order
FAMILIES: Tuple[str, ...] = ("Dom", "Bal", "Com")

#: the five family compositions of Section 4.8 (Fig. 4 upper panel, E1-E5)
FAMILY_COMPOSITIONS = {
    "bal": ("Bal",),
    "bal+dom": ("Dom", "Bal"),
    "bal+com": ("Bal", "Com"),
    "dom+com": ("Dom", "Com"),
    "full": ("Dom", "Bal", "Com"),
}


def _check_unit(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def _check_aux(num_aux: int) -> int:
    if int(num_aux) < 1:
        raise ValueError(
            f"triplet templates need at least one content modality, got {num_aux}")
    return int(num_aux)


def dom_template(alpha: float, num_aux: int = 2) -> Tensor:
    r"""Dominant template (Eq. 12), canonical order ``[anchor, aux1, aux2]``: ``[1 + num_aux]``."""
    alpha, m = _check_unit("alpha", alpha), _check_aux(num_aux)
    base = torch.tensor([0.5] + [0.5 / m] * m, dtype=torch.float64)
    onehot = torch.zeros(m + 1, dtype=torch.float64)
    onehot[0] = 1.0
    return ((1.0 - alpha) * base + alpha * onehot).float()


def bal_template(beta: float, num_aux: int = 2) -> Tensor:
    r"""Balanced template (Eq. 13): :math:`[\frac13+\frac\beta6, \frac13-\frac\beta{12}, \frac13-\frac\beta{12}]`."""
    beta, m = _check_unit("beta", beta), _check_aux(num_aux)
    n = m + 1
    w = torch.tensor([1.0 / n + beta / 6.0] + [1.0 / n - beta / (6.0 * m)] * m,
                     dtype=torch.float64)
    return w.float()


def com_template(delta: float, eps: float = 0.05, num_aux: int = 2) -> Tensor:
    r"""Complementary template (Eq. 14): :math:`[\epsilon, (1-\epsilon)\delta, (1-\epsilon)(1-\delta)]`."""
    delta, eps, m = _check_unit("delta", delta), _check_unit("eps", eps), _check_aux(num_aux)
    if m == 1:
        aux = [1.0 - eps]
    else:
        aux = [(1.0 - eps) * delta] + [(1.0 - eps) * (1.0 - delta) / (m - 1)] * (m - 1)
    return torch.tensor([eps] + aux, dtype=torch.float64).float()


def canonical_template(family: str, alpha: float = 0.6, beta: float = 0.2, delta: float = 0.5,
                       eps: float = 0.05, num_aux: int = 2) -> Tensor:
    r"""Canonical ``[anchor, aux1, ...]`` triplet of ``family`` in ``{"Dom", "Bal", "Com"}``."""
    if family == "Dom":
        return dom_template(alpha, num_aux)
    if family == "Bal":
        return bal_template(beta, num_aux)
    if family == "Com":
        return com_template(delta, eps, num_aux)
    raise ValueError(f"unknown template family '{family}', expected one of {FAMILIES}")


def aux_order(anchor: int, num_sources: int = 3) -> List[int]:
    r"""Global slots of ``[anchor, aux1, aux2, ...]`` for group ``anchor``.

    Global slots: ``0 = B`` (behaviour), ``1 = A`` (modality 1), ``2 = S`` (modality 2), ...
    The auxiliaries follow the priority ``1, 0, 2, 3, ...`` (``A > B > S``):
    ``B -> [0, 1, 2]``, ``A -> [1, 0, 2]``, ``S -> [2, 1, 0]``.
    """
    if num_sources < 2:
        raise ValueError(f"need at least 2 sources (behaviour + 1 modality), got {num_sources}")
    if not 0 <= anchor < num_sources:
        raise ValueError(f"anchor {anchor} out of range for {num_sources} sources")
    priority = [1, 0] + list(range(2, num_sources))
    return [anchor] + [s for s in priority if s != anchor]


def group_permutation(anchor: int, num_sources: int = 3) -> Tensor:
    r"""Permutation matrix :math:`P_g` (``[n, n]``) with ``w_global = P_g @ w_canonical`` (Eq. 15)."""
    order = aux_order(anchor, num_sources)
    perm = torch.zeros(num_sources, num_sources)
    for k, slot in enumerate(order):
        perm[slot, k] = 1.0
    return perm


def permute_to_global(w_canonical: Tensor, anchor: int) -> Tensor:
    r""":math:`P_g(\tilde{\mathbf w})`: canonical ``[anchor, aux...]`` -> global ``[B, A, S, ...]``."""
    n = w_canonical.size(-1)
    out = torch.empty_like(w_canonical)
    out[..., aux_order(anchor, n)] = w_canonical
    return out


@dataclass(frozen=True)
class ExpertPool:
    r"""A structured expert pool: fusion weights and labels of each expert.

    Attributes:
        weights: ``[E, n]`` triplets in global source order (rows sum to 1).
        sources: the ``n`` source names in global order (``[B, A, S]``).
        groups: per expert, its anchor source name.
        families: per expert, its family (``"Dom"``, ``"Bal"`` or ``"Com"``).
        replicas: per expert, its replica index ``r`` in ``0..p-1``.
    """

    weights: Tensor
    sources: Tuple[str, ...]
    groups: Tuple[str, ...]
    families: Tuple[str, ...]
    replicas: Tuple[int, ...]

    def __len__(self) -> int:
        return self.weights.size(0)

    @property
    def num_experts(self) -> int:
        return self.weights.size(0)

    @property
    def group_index(self) -> Tensor:
        """``[E]`` long tensor: index of each expert's anchor in ``sources``."""
        return torch.tensor([self.sources.index(g) for g in self.groups], dtype=torch.long)

    @property
    def family_index(self) -> Tensor:
        """``[E]`` long tensor: index of each expert's family in :data:`FAMILIES`."""
        return torch.tensor([FAMILIES.index(f) for f in self.families], dtype=torch.long)

    def labels(self) -> List[str]:
        """Human-readable ``"<group>-<family>[#r]"`` label per expert."""
        p = max(self.replicas) + 1 if self.replicas else 1
        return [f"{g}-{t}" + (f"#{r}" if p > 1 else "")
                for g, t, r in zip(self.groups, self.families, self.replicas)]


def _resolve_families(families: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    if isinstance(families, str):
        key = "+".join(sorted(s.strip().lower() for s in families.split("+")))
        table = {"+".join(sorted(k.split("+"))): v for k, v in FAMILY_COMPOSITIONS.items()}
        table["bal+com+dom"] = FAMILY_COMPOSITIONS["full"]
        table["com"] = ("Com",)
        table["dom"] = ("Dom",)
        if key not in table:
            raise ValueError(f"unknown family composition '{families}', expected one of "
                             f"{sorted(FAMILY_COMPOSITIONS)} or a list of {FAMILIES}")
        return table[key]
    chosen = set()
    for f in families:
        if f not in FAMILIES:
            raise ValueError(f"unknown template family '{f}', expected one of {FAMILIES}")
        chosen.add(f)
    if not chosen:
        raise ValueError("at least one template family is required")
    return tuple(f for f in FAMILIES if f in chosen)


def triplet_expert_pool(
    modalities: Union[int, Sequence[str]] = 2,
    families: Union[str, Sequence[str]] = "full",
    split: int = 1,
    alpha: float = 0.6,
    beta: float = 0.2,
    delta: float = 0.5,
    eps: float = 0.05,
    behavior: str = "B",
) -> ExpertPool:
    r"""Build the template expert pool (Eq. 12-15; families and splitting of Section 4.8).

    Args:
        modalities: content-modality names in global order (``[A, S]``), or their number
            (``2`` gives the names ``"A"``, ``"S"``).
        families: a composition name (``"full"``, ``"bal"``, ``"bal+dom"``, ``"bal+com"``,
            ``"dom+com"``) or a list of families from :data:`FAMILIES`.
        split: expert splitting factor ``p`` (each ``(g, t)`` expert replicated ``p`` times).
        alpha: Dom anchor-dominance control (Eq. 12), default 0.6 (Table 3).
        beta: Bal anchor-bias control (Eq. 13), default 0.2.
        delta: Com auxiliary split (Eq. 14), default 0.5.
        eps: Com minimal anchor mass (Eq. 14), default 0.05 (project decision).
        behavior: name of the behaviour source.

    Returns:
        :class:`ExpertPool` with ``weights`` of shape ``[E, M + 1]``, ``E = (M+1) * T * p``.
    """
    if isinstance(modalities, int):
        names = ["A", "S"] if modalities == 2 else [f"M{k + 1}" for k in range(modalities)]
    else:
        names = [str(m) for m in modalities]
    if len(names) < 1:
        raise ValueError("the triplet-template pool needs at least one content modality")
    sources = (behavior, *names)
    if len(set(sources)) != len(sources):
        raise ValueError(f"source names must be distinct, got {sources}")
    if int(split) < 1:
        raise ValueError(f"split (expert replication p) must be >= 1, got {split}")
    fams = _resolve_families(families)
    num_aux = len(names)
    canon = {t: canonical_template(t, alpha, beta, delta, eps, num_aux) for t in fams}
    rows, groups, fam_labels, replicas = [], [], [], []
    for g, gname in enumerate(sources):
        for t in fams:
            w = permute_to_global(canon[t], g)
            for r in range(int(split)):
                rows.append(w)
                groups.append(gname)
                fam_labels.append(t)
                replicas.append(r)
    return ExpertPool(torch.stack(rows), tuple(sources), tuple(groups), tuple(fam_labels),
                      tuple(replicas))
