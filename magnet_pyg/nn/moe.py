r"""Triplet-template Mixture-of-Experts scoring head of MAGNET (Section 3.3, Eq. 9-11, 16-21).

Both the router and the experts **factorise over the user and item sides** (project
decision, ``REFERENCE.md`` section 2), so the score of every (user, item) pair can be computed
exactly with matrix products (:meth:`TripletMoEHead.score_all`):

* router (Eq. 16-17): :math:`\ell_{ui} = W_r [\mathbf z_u; \mathbf z_i] + \mathbf b_r
  = W_U \mathbf z_u + W_I \mathbf z_i + \mathbf b_r`, :math:`\pi_{ui} = \mathrm{softmax}(\ell_{ui})`;
* expert ``e`` (Eq. 10-11): :math:`\mathbf s^{(e)}_{ui} = f_e(\mathbf x_u(\mathbf w_e)) \odot
  g_e(\mathbf x_i(\mathbf w_e))` with :math:`f_e(\mathbf x) = \sigma(W_{f,e}\mathbf x + \mathbf b_{f,e})`
  (same for :math:`g_e`; :math:`\sigma` is the identity by default);
* Top-K + renormalisation (Eq. 18-19), aggregation (Eq. 20), linear Score head (Eq. 21):
  :math:`\hat y_{ui} = \mathbf v^\top \sum_{e \in \Gamma_{ui}} \tilde\pi^{(e)}_{ui} \mathbf s^{(e)}_{ui} + b
  = \sum_{e \in \Gamma_{ui}} \tilde\pi^{(e)}_{ui}\, (f_e(\mathbf x_u) \odot \mathbf v)^\top g_e(\mathbf x_i) + b`.

For full ranking, ``S_e = (f_e(X_u) \odot v) g_e(X_I)^\top`` is a ``[B, I]`` matrix per expert and
the router logits ``[B, I, E]`` are a broadcast sum, so the per-pair Top-K selection is exact.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.resolver import activation_resolver

from .templates import ExpertPool, triplet_expert_pool
from .topk_mixture import topk_mix

__all__ = ["MoEOutput", "TripletMoEHead", "FusionHead"]

Cues = Union[Tensor, Sequence[Tensor], None]
_INITS = ("identity", "xavier")


class MoEOutput(NamedTuple):
    r"""Result of a pairwise head call.

    Attributes:
        score: ``[B]`` predictions :math:`\hat y_{ui}` (Eq. 21).
        pi: ``[B, E]`` dense routing distribution :math:`\pi_{ui}` (Eq. 17).
        topk_index: ``[B, K]`` selected experts :math:`\Gamma_{ui}` (Eq. 18), by decreasing
            :math:`\pi`.
        topk_weight: ``[B, K]`` renormalised weights :math:`\tilde\pi_{ui}` (Eq. 19).
    """

    score: Tensor
    pi: Tensor
    topk_index: Tensor
    topk_weight: Tensor


def _sources(z: Tensor, cues: Cues) -> Tensor:
    """``[B, 1 + M, d]``: behaviour embedding followed by the modality cues (Eq. 9)."""
    if cues is None:
        return z.unsqueeze(1)
    if not isinstance(cues, Tensor):
        cues = torch.stack(list(cues), dim=1) if len(cues) else z.new_zeros(z.size(0), 0, z.size(1))
    if cues.dim() != 3 or cues.size(0) != z.size(0) or cues.size(2) != z.size(1):
        raise ValueError(f"cues must have shape [{z.size(0)}, M, {z.size(1)}], "
                         f"got {tuple(cues.shape)}")
    return torch.cat([z.unsqueeze(1), cues], dim=1)


def _check_init(expert_init: str) -> None:
    if expert_init not in _INITS:
        raise ValueError(f"expert_init must be one of {_INITS}, got '{expert_init}'")


class TripletMoEHead(torch.nn.Module):
    r"""Sparse triplet-template MoE scoring head (MAGNET Eq. 9-11, 16-21), factorised.

    Args:
        channels: ``d``, size of :math:`\mathbf z` and of every cue :math:`\mathbf h^m`.
        num_modalities: number ``M`` of content modalities (``>= 1``), or their names.
        hidden_channels: ``d'``, output size of :math:`f_e, g_e` (default ``d``).
        top_k: ``K`` experts activated per pair (Eq. 18); ``1 <= K <= E``.
        families: template families (see :func:`~magnet_pyg.nn.templates.triplet_expert_pool`):
            ``"full"`` (E = 9), ``"bal"``, ``"bal+dom"``, ``"bal+com"``, ``"dom+com"``.
        split: expert splitting ``p`` (``E = 9p`` for the full pool).
        alpha, beta, delta, eps: template controls (Eq. 12-14).
        templates: ``True`` uses the fixed template triplets; ``False`` is the "w/o Templates"
            ablation (free experts): each expert learns its own mixture
            :math:`\mathbf w_e = \mathrm{softmax}(\boldsymbol\theta_e)` (initialised uniform).
        num_experts: number of free experts (only with ``templates=False``; default: the size
            of the template pool, so the ablation keeps ``E``).
        dropout: dropout on :math:`f_e(\cdot)` and :math:`g_e(\cdot)` outputs (training only;
            :meth:`score_all` never drops).
        activation: optional activation :math:`\sigma` inside :math:`f_e, g_e` (e.g. ``"relu"``);
            ``None`` keeps the experts bilinear. Either way the head stays factorised.
        expert_init: ``"identity"`` (default; :math:`W_{f,e} = W_{g,e} = I` plus 0.01 noise,
            :math:`\mathbf v = \mathbf 1`, so each expert starts as the dot product
            :math:`\mathbf x_u^\top \mathbf x_i`) or ``"xavier"``.
        expert_type: ``"linear"`` (default): :math:`f_e, g_e` are full ``d x d'`` affine maps;
            ``"diag"``: the "lightweight transformation" of Section 3.3 taken literally,
            :math:`f_e(\mathbf x) = \mathbf a_e \odot \mathbf x + \mathbf b_e` (``d' = d``),
            2d parameters per side instead of d^2; it cannot memorise pairs through the
            expert maps, which matters on sparse data.
        residual: ``True`` adds the plain behaviour score :math:`\mathbf z_u^\top\mathbf z_i`
            to Eq. 21 and initialises the Score head :math:`\mathbf v` to zero, so the model
            starts as the backbone's dot product and the experts learn a correction on top of
            it (content is used only where the routed experts improve on it).
        detach_router: ``True`` feeds the router :math:`[\mathbf z_u; \mathbf z_i]` with the
            gradient stopped, so the routing losses (and the router's share of the ranking
            loss) train the router only and never move the behaviour embeddings underneath.
        behavior: name of the behaviour source used in expert labels.

    Shapes:
        - **input:** ``z_u, z_i``: ``[B, d]``; ``cues_u, cues_i``: ``[B, M, d]`` (or a list of
          ``M`` tensors ``[B, d]``).
        - **output:** :class:`MoEOutput` (``score [B]``, ``pi [B, E]``, ``topk_index [B, K]``,
          ``topk_weight [B, K]``).
    """

    def __init__(
        self,
        channels: int,
        num_modalities: Union[int, Sequence[str]] = 2,
        hidden_channels: Optional[int] = None,
        top_k: int = 4,
        families: Union[str, Sequence[str]] = "full",
        split: int = 1,
        alpha: float = 0.6,
        beta: float = 0.2,
        delta: float = 0.5,
        eps: float = 0.05,
        templates: bool = True,
        num_experts: Optional[int] = None,
        dropout: float = 0.0,
        activation: Optional[str] = None,
        expert_init: str = "identity",
        expert_type: str = "linear",
        residual: bool = False,
        detach_router: bool = False,
        behavior: str = "B",
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        modalities = num_modalities if isinstance(num_modalities, int) else list(num_modalities)
        num_mod = modalities if isinstance(modalities, int) else len(modalities)
        if num_mod < 1:
            raise ValueError("TripletMoEHead needs at least one content modality "
                             "(use FusionHead for behaviour only)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        _check_init(expert_init)
        if expert_type not in ("linear", "diag"):
            raise ValueError(f"expert_type must be 'linear' or 'diag', got '{expert_type}'")
        if expert_type == "diag" and hidden_channels not in (None, channels):
            raise ValueError("expert_type='diag' keeps the size: hidden_channels must equal channels")
        pool = triplet_expert_pool(modalities, families, split, alpha, beta, delta, eps, behavior)
        if templates:
            if num_experts is not None and num_experts != len(pool):
                raise ValueError("num_experts is set by the template pool "
                                 f"({len(pool)}); give it only with templates=False")
            num_exp = len(pool)
        else:
            num_exp = len(pool) if num_experts is None else int(num_experts)
            if num_exp < 1:
                raise ValueError(f"num_experts must be >= 1, got {num_exp}")
        if not 1 <= int(top_k) <= num_exp:
            raise ValueError(f"top_k must be in [1, E] = [1, {num_exp}], got {top_k}")

        self.channels = channels
        self.hidden_channels = hidden_channels or channels
        self.num_modalities = num_mod
        self.num_sources = num_mod + 1
        self.num_experts = num_exp
        self.top_k = int(top_k)
        self.templates = templates
        self.dropout = dropout
        self.expert_init = expert_init
        self.expert_type = expert_type
        self.residual = residual
        self.detach_router = detach_router
        self.pool: Optional[ExpertPool] = pool if templates else None
        self.sources = pool.sources

        h, d, E = self.hidden_channels, channels, num_exp
        if templates:
            self.register_buffer("template_weights", pool.weights.clone())
            self.mix_logits = None
        else:
            self.register_buffer("template_weights", None)
            self.mix_logits = torch.nn.Parameter(torch.zeros(E, self.num_sources))
        self.router = torch.nn.Linear(2 * d, E)
        shape = (E, d, h) if expert_type == "linear" else (E, 1, d)
        self.f_weight = torch.nn.Parameter(torch.empty(*shape))
        self.f_bias = torch.nn.Parameter(torch.empty(E, h))
        self.g_weight = torch.nn.Parameter(torch.empty(*shape))
        self.g_bias = torch.nn.Parameter(torch.empty(E, h))
        self.score = torch.nn.Linear(h, 1)
        self.act = activation_resolver(activation) if activation is not None else None
        self.reset_parameters()

    # ------------------------------------------------------------------ parameters
    def reset_parameters(self) -> None:
        r"""Router: PyTorch default; experts/Score head: see ``expert_init``; free mixtures
        uniform."""
        self.router.reset_parameters()
        if self.mix_logits is not None:
            torch.nn.init.zeros_(self.mix_logits)
        for w, b in ((self.f_weight, self.f_bias), (self.g_weight, self.g_bias)):
            for e in range(self.num_experts):
                if self.expert_type == "diag":
                    torch.nn.init.ones_(w.data[e])
                    if self.expert_init != "identity":
                        w.data[e].add_(0.1 * torch.randn_like(w.data[e]))
                elif self.expert_init == "identity":
                    torch.nn.init.eye_(w.data[e])
                    w.data[e].add_(0.01 * torch.randn_like(w.data[e]))
                else:
                    torch.nn.init.xavier_uniform_(w.data[e])
            torch.nn.init.zeros_(b)
        if self.residual:   # start exactly at the backbone's dot product
            torch.nn.init.zeros_(self.score.weight)
            torch.nn.init.zeros_(self.score.bias)
        elif self.expert_init == "identity":
            torch.nn.init.ones_(self.score.weight)
            torch.nn.init.zeros_(self.score.bias)
        else:
            self.score.reset_parameters()

    def expert_weights(self) -> Tensor:
        r"""``[E, 1 + M]`` fusion triplets :math:`\mathbf w_e` in global order ``[B, A, S]``."""
        if self.templates:
            return self.template_weights
        return torch.softmax(self.mix_logits, dim=-1)

    def expert_labels(self) -> List[str]:
        """Per-expert labels (``"B-Dom"``, ...; ``"free-<e>"`` for free experts)."""
        if self.pool is not None:
            return self.pool.labels()
        return [f"free-{e}" for e in range(self.num_experts)]

    # ------------------------------------------------------------------ pieces
    def _side(self, r: Tensor, weight: Tensor, bias: Tensor, drop: bool) -> Tensor:
        """``r [N, n, d]`` -> expert side transforms ``[E, N, h]`` (Eq. 10 then f_e / g_e)."""
        x = torch.einsum("en,bnd->ebd", self.expert_weights().to(r.dtype), r)
        if self.expert_type == "diag":
            out = torch.addcmul(bias.unsqueeze(1), x, weight)
        else:
            out = torch.baddbmm(bias.unsqueeze(1), x, weight)
        if self.act is not None:
            out = self.act(out)
        if drop:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return out

    def router_logits(self, z_u: Tensor, z_i: Tensor) -> Tensor:
        r"""``[B, E]`` router logits on :math:`q_{ui} = [\mathbf z_u; \mathbf z_i]` (Eq. 16-17)."""
        return self.router(torch.cat([self._router_input(z_u), self._router_input(z_i)], dim=-1))

    def _router_input(self, z: Tensor) -> Tensor:
        """``z`` with the gradient stopped when ``detach_router`` is set."""
        return z.detach() if self.detach_router else z

    def _select(self, logits: Tensor):
        """Top-K over the last dim and renormalised weights (Eq. 18-19)."""
        top_logits, idx = logits.topk(self.top_k, dim=-1)
        # softmax over the selected logits == pi_e / sum_{e' in TopK} pi_e' (Eq. 19), with
        # exactly zero gradient for the router rows of unselected experts.
        return idx, torch.softmax(top_logits, dim=-1), top_logits

    # ------------------------------------------------------------------ forward
    def forward(self, z_u: Tensor, z_i: Tensor, cues_u: Cues, cues_i: Cues) -> MoEOutput:
        r"""Score ``B`` (user, item) pairs.

        Args:
            z_u: ``[B, d]`` user behaviour embeddings :math:`\mathbf z_u` (Eq. 6).
            z_i: ``[B, d]`` item behaviour embeddings.
            cues_u: ``[B, M, d]`` user cues :math:`\mathbf h_u^m`.
            cues_i: ``[B, M, d]`` item cues :math:`\mathbf h_i^m`.
        """
        r_u, r_i = _sources(z_u, cues_u), _sources(z_i, cues_i)
        self._check_sources(r_u)
        self._check_sources(r_i)
        fu = self._side(r_u, self.f_weight, self.f_bias, drop=True)      # [E, B, h]
        gi = self._side(r_i, self.g_weight, self.g_bias, drop=True)      # [E, B, h]
        expert_scores = ((fu * gi) @ self.score.weight.view(-1)).t()     # [B, E]
        logits = self.router_logits(z_u, z_i)
        pi = torch.softmax(logits, dim=-1)
        idx, weight, _ = self._select(logits)
        score = (weight * expert_scores.gather(1, idx)).sum(-1) + self.score.bias
        if self.residual:
            score = score + (z_u * z_i).sum(-1)
        return MoEOutput(score, pi, idx, weight)

    def _check_sources(self, r: Tensor) -> None:
        if r.size(1) != self.num_sources:
            raise ValueError(f"expected {self.num_modalities} modality cues, "
                             f"got {r.size(1) - 1}")

    def score_all(self, z_u: Tensor, cues_u: Cues, z_i_all: Tensor, cues_i_all: Cues,
                  item_chunk: int = 256, user_block: int = 512) -> Tensor:
        r"""Exact scores of ``B`` users against all ``I`` items (full ranking), no dropout.

        Differentiable; wrap it in :func:`torch.no_grad` for evaluation.

        Uses the factorisation: per expert ``S_e = (f_e(X_u) \odot v) g_e(X_I)^\top`` and router
        logits ``W_U z_u + W_I z_i + b_r`` broadcast to ``[E, B, C]``; Top-K and
        renormalisation are then taken per pair, exactly as in :meth:`forward`
        (:func:`~magnet_pyg.nn.topk_mixture.topk_mix`), in cache-sized blocks of users.

        Args:
            z_u: ``[B, d]``; cues_u: ``[B, M, d]``.
            z_i_all: ``[I, d]``; cues_i_all: ``[I, M, d]``.
            item_chunk: items per chunk.
            user_block: users per block within a chunk; the ``[E, user_block, item_chunk]``
                blocks stay in the CPU cache between the expert scores and their mixture.

        Returns:
            ``[B, I]`` scores, equal to :meth:`forward` on every pair (up to float rounding).
        """
        r_u, r_i = _sources(z_u, cues_u), _sources(z_i_all, cues_i_all)
        self._check_sources(r_u)
        self._check_sources(r_i)
        d = self.channels
        fu = self._side(r_u, self.f_weight, self.f_bias, drop=False)
        fu = fu * self.score.weight.view(1, 1, -1)                           # [E, B, h]
        w_r, b_r = self.router.weight, self.router.bias
        q_u, q_i = self._router_input(z_u), self._router_input(z_i_all)
        lu = (q_u @ w_r[:, :d].t() + b_r).t().unsqueeze(2)                  # [E, B, 1]
        out = z_u.new_empty(z_u.size(0), z_i_all.size(0))
        B, I = z_u.size(0), z_i_all.size(0)
        for start in range(0, I, item_chunk):
            sl = slice(start, start + item_chunk)
            gi = self._side(r_i[sl], self.g_weight, self.g_bias, drop=False).transpose(1, 2)  # [E, h, C]
            li = (q_i[sl] @ w_r[:, d:].t()).t().unsqueeze(1)                  # [E, 1, C]
            for ub in range(0, B, user_block):                                # cache-sized blocks
                bl = slice(ub, ub + user_block)
                s = torch.bmm(fu[:, bl], gi)                                  # [E, b, C]
                out[bl, sl] = topk_mix(lu[:, bl] + li, s, self.top_k)
            if self.residual:
                out[:, sl] += z_u @ z_i_all[sl].t()
        return out + self.score.bias

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, hidden={self.hidden_channels}, "
                f"modalities={self.num_modalities}, experts={self.num_experts}, "
                f"top_k={self.top_k}, templates={self.templates}, expert_type={self.expert_type}, "
                f"residual={self.residual}")


class FusionHead(torch.nn.Module):
    r"""The "w/o MoE Fusion" ablation (MAGNET Table 5): one factorised fusion head over
    :math:`\{\mathbf z, \mathbf h^A, \mathbf h^S\}`, no routing.

    .. math::
        \hat y_{ui} = \mathbf v^\top\big(f([\mathbf z_u; \mathbf h_u^1; \dots])
        \odot g([\mathbf z_i; \mathbf h_i^1; \dots])\big) + b,

    with :math:`f, g` linear maps ``(1 + M) d -> d'`` (optional activation and dropout). Same
    interface as :class:`TripletMoEHead`: it reports a single expert (``pi`` is all ones,
    ``[B, 1]``), so routing statistics and regularisers are trivially constant.

    Args:
        channels: ``d``.
        num_modalities: ``M >= 0`` (or their names).
        hidden_channels: ``d'`` (default ``d``).
        dropout: dropout on :math:`f(\cdot), g(\cdot)` (training only).
        activation: optional activation inside :math:`f, g`.
        expert_init: ``"identity"`` (default; :math:`f = g =` mean of the sources, plus 0.01
            noise, :math:`\mathbf v = \mathbf 1`) or ``"xavier"``.
    """

    def __init__(
        self,
        channels: int,
        num_modalities: Union[int, Sequence[str]] = 2,
        hidden_channels: Optional[int] = None,
        dropout: float = 0.0,
        activation: Optional[str] = None,
        expert_init: str = "identity",
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        num_mod = num_modalities if isinstance(num_modalities, int) else len(list(num_modalities))
        if num_mod < 0:
            raise ValueError("num_modalities must be >= 0")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        _check_init(expert_init)
        self.channels = channels
        self.hidden_channels = hidden_channels or channels
        self.num_modalities = num_mod
        self.num_sources = num_mod + 1
        self.num_experts = 1
        self.top_k = 1
        self.dropout = dropout
        self.expert_init = expert_init
        n, h = self.num_sources, self.hidden_channels
        self.f = torch.nn.Linear(n * channels, h)
        self.g = torch.nn.Linear(n * channels, h)
        self.score = torch.nn.Linear(h, 1)
        self.act = activation_resolver(activation) if activation is not None else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.f, self.g):
            if self.expert_init == "identity":
                eye = torch.zeros(self.hidden_channels, self.channels)
                torch.nn.init.eye_(eye)
                with torch.no_grad():
                    lin.weight.copy_(eye.repeat(1, self.num_sources) / self.num_sources)
                    lin.weight.add_(0.01 * torch.randn_like(lin.weight))
            else:
                torch.nn.init.xavier_uniform_(lin.weight)
            torch.nn.init.zeros_(lin.bias)
        if self.expert_init == "identity":
            torch.nn.init.ones_(self.score.weight)
            torch.nn.init.zeros_(self.score.bias)
        else:
            self.score.reset_parameters()

    def expert_labels(self) -> List[str]:
        return ["fusion"]

    def _side(self, z: Tensor, cues: Cues, lin: torch.nn.Linear, drop: bool) -> Tensor:
        r = _sources(z, cues)
        if r.size(1) != self.num_sources:
            raise ValueError(f"expected {self.num_modalities} modality cues, got {r.size(1) - 1}")
        out = lin(r.flatten(1))
        if self.act is not None:
            out = self.act(out)
        if drop:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return out

    def forward(self, z_u: Tensor, z_i: Tensor, cues_u: Cues, cues_i: Cues) -> MoEOutput:
        """Score ``B`` pairs (see :class:`TripletMoEHead.forward`)."""
        s = self._side(z_u, cues_u, self.f, True) * self._side(z_i, cues_i, self.g, True)
        score = self.score(s).view(-1)
        ones = score.new_ones(score.size(0), 1)
        idx = torch.zeros(score.size(0), 1, dtype=torch.long, device=score.device)
        return MoEOutput(score, ones, idx, ones)

    def score_all(self, z_u: Tensor, cues_u: Cues, z_i_all: Tensor, cues_i_all: Cues,
                  item_chunk: int = 256) -> Tensor:
        """``[B, I]`` exact scores against all items (no dropout)."""
        fu = self._side(z_u, cues_u, self.f, False) * self.score.weight.view(1, -1)
        out = z_u.new_empty(z_u.size(0), z_i_all.size(0))
        cues_i_all = None if cues_i_all is None else (
            cues_i_all if isinstance(cues_i_all, Tensor) else torch.stack(list(cues_i_all), 1))
        for start in range(0, z_i_all.size(0), item_chunk):
            sl = slice(start, start + item_chunk)
            gi = self._side(z_i_all[sl], None if cues_i_all is None else cues_i_all[sl],
                            self.g, False)
            out[:, sl] = fu @ gi.t()
        return out + self.score.bias

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, hidden={self.hidden_channels}, "
                f"modalities={self.num_modalities}")
