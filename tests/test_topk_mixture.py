"""The fused Top-K expert mixture of full ranking equals its eager kernel."""
import pytest
import torch

from magnet_pyg.nn import topk_mixture as tm
from magnet_pyg.nn.moe import TripletMoEHead


def _block(E=9, B=512, C=1024, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(E, B, C, generator=g), torch.randn(E, B, C, generator=g)


def test_eager_kernel_is_topk_softmax_mixture():
    logits, s = _block(E=5, B=7, C=3)
    for k in (1, 3, 5):
        val, idx = logits.permute(1, 2, 0).topk(k, dim=-1)
        w = torch.softmax(val, dim=-1)
        ref = (w * s.permute(1, 2, 0).gather(-1, idx)).sum(-1)
        torch.testing.assert_close(tm.topk_mix_eager(logits, s, k), ref, rtol=1e-5, atol=1e-6)


def test_top_k_out_of_range_is_refused():
    logits, s = _block(E=4, B=2, C=2)
    with pytest.raises(ValueError, match="top_k must be in"):
        tm.topk_mix(logits, s, 5)


@pytest.mark.skipif(not tm.compile_enabled(), reason="compilation switched off in this environment")
def test_compiled_kernel_matches_eager(one_thread):
    logits, s = _block()
    assert logits.numel() >= tm.COMPILE_MIN_NUMEL
    with torch.no_grad():
        fused = tm.topk_mix(logits, s, 4)
        if not tm.compile_enabled():
            pytest.skip("torch.compile does not work on this machine (the eager path ran)")
        eager = tm.topk_mix_eager(logits, s, 4)
    torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-5)
    # the selection is the same: zeroing the scores of every non-selected expert changes nothing
    kth = logits.topk(4, dim=0).values[-1]
    with torch.no_grad():
        masked = torch.where(logits >= kth, s, torch.zeros_like(s))
        torch.testing.assert_close(tm.topk_mix(logits, masked, 4), fused, rtol=1e-5, atol=1e-5)


def test_failed_compilation_falls_back_to_eager(monkeypatch):
    logits, s = _block()
    monkeypatch.setitem(tm._state, "kernel", None)
    monkeypatch.setitem(tm._state, "failed", False)
    monkeypatch.setitem(tm._state, "enabled", True)

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(torch, "compile", broken)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="runs eagerly"):
        out = tm.topk_mix(logits, s, 4)
    assert torch.equal(out, tm.topk_mix_eager(logits, s, 4))
    assert not tm.compile_enabled()


def test_switched_off_and_gradient_paths_are_eager(monkeypatch):
    logits, s = _block()
    monkeypatch.setitem(tm._state, "enabled", False)
    with torch.no_grad():
        assert torch.equal(tm.topk_mix(logits, s, 4), tm.topk_mix_eager(logits, s, 4))
    monkeypatch.setitem(tm._state, "enabled", True)
    small_l, small_s = _block(B=4, C=8)
    small_s.requires_grad_(True)
    out = tm.topk_mix(small_l, small_s, 4)
    out.sum().backward()
    assert small_s.grad is not None and torch.equal(out, tm.topk_mix_eager(small_l, small_s, 4))


def test_score_all_equals_pairwise_scores_through_the_fused_kernel(one_thread):
    torch.manual_seed(0)
    head = TripletMoEHead(16, 2, residual=True).eval()
    B, I = 600, 1000
    zu, cu, zi, ci = torch.randn(B, 16), torch.randn(B, 2, 16), torch.randn(I, 16), torch.randn(I, 2, 16)
    with torch.no_grad():
        full = head.score_all(zu, cu, zi, ci, item_chunk=1000)   # 9 x 600 x 1000 >= COMPILE_MIN_NUMEL
        u = torch.arange(B).repeat_interleave(7)
        i = torch.randint(0, I, (B * 7,))
        pair = head(zu[u], zi[i], cu[u], ci[i]).score
    torch.testing.assert_close(full[u, i], pair, rtol=1e-4, atol=1e-4)
