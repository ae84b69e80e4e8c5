"""The per-pair Top-K expert mixture of full ranking (Eq. 18-20)."""
import pytest
import torch

from magnet_pyg.nn import topk_mix
from magnet_pyg.nn.moe import TripletMoEHead


def _block(E, B, C, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(E, B, C, generator=g), torch.randn(E, B, C, generator=g)


def test_mixture_is_the_renormalised_topk_softmax():
    logits, s = _block(5, 7, 3)
    for k in (1, 3, 5):
        val, idx = logits.permute(1, 2, 0).topk(k, dim=-1)
        w = torch.softmax(val, dim=-1)
        ref = (w * s.permute(1, 2, 0).gather(-1, idx)).sum(-1)
        torch.testing.assert_close(topk_mix(logits, s, k), ref, rtol=1e-5, atol=1e-6)


def test_top_k_out_of_range_is_refused():
    logits, s = _block(4, 2, 2)
    with pytest.raises(ValueError, match="top_k must be in"):
        topk_mix(logits, s, 5)


@pytest.mark.parametrize("user_block", [1, 7, 512])
def test_score_all_blocks_equal_pairwise_scores(one_thread, user_block):
    torch.manual_seed(0)
    head = TripletMoEHead(16, 2, residual=True).eval()
    B, I = 60, 100
    zu, cu, zi, ci = torch.randn(B, 16), torch.randn(B, 2, 16), torch.randn(I, 16), torch.randn(I, 2, 16)
    with torch.no_grad():
        full = head.score_all(zu, cu, zi, ci, item_chunk=30, user_block=user_block)
        u = torch.arange(B).repeat_interleave(I)
        i = torch.arange(I).repeat(B)
        pair = head(zu[u], zi[i], cu[u], ci[i]).score.view(B, I)
    torch.testing.assert_close(full, pair, rtol=1e-5, atol=1e-5)
