"""magnet_pyg.train.Adam is torch.optim.Adam (parameters, state, state_dict), up to the last bit
(a last-bit difference shows in about 1 process in 15)."""
import copy

import pytest
import torch

from magnet_pyg.train import Adam


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(300, 8, generator=g)), torch.nn.Parameter(torch.randn(8, generator=g)),
            torch.nn.Parameter(torch.randn(5, 3, generator=g))]


def _equal(a, b):
    return torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9) is None


def _run(opt_cls, kwargs, groups, steps=7, state=None):
    ps = _params()
    opt = opt_cls(groups(ps), **kwargs)
    if state is not None:
        opt.load_state_dict(state)
    g = torch.Generator().manual_seed(1)
    for s in range(steps):
        for i, p in enumerate(ps):
            # the last parameter skips every third step (no gradient)
            p.grad = None if (i == 2 and s % 3 == 0) else torch.randn(p.shape, generator=g) * 10 ** (s % 3 - 1)
        opt.step()
    return ps, opt


@pytest.mark.parametrize("kwargs", [{}, {"lr": 3e-3, "weight_decay": 2e-4}, {"betas": (0.8, 0.95), "eps": 1e-6},
                                    {"amsgrad": True, "weight_decay": 1e-3}, {"maximize": True}])
@pytest.mark.parametrize("grouped", [False, True])
def test_adam_is_torch_adam_bit_for_bit(kwargs, grouped):
    groups = (lambda ps: [{"params": ps[:1], "lr": 1e-2}, {"params": ps[1:]}]) if grouped else (lambda ps: ps)
    ref, ref_opt = _run(torch.optim.Adam, kwargs, groups)
    new, new_opt = _run(Adam, kwargs, groups)
    assert all(_equal(a, b) for a, b in zip(ref, new))
    # the in-place update ran (its buffers exist) unless an option asks for PyTorch's step
    plain = not (kwargs.get("amsgrad") or kwargs.get("maximize"))
    assert bool(new_opt.__dict__.get("_scratch")) == plain
    sa, sb = ref_opt.state_dict(), new_opt.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for k in sa["state"]:
        assert sa["state"][k].keys() == sb["state"][k].keys()
        assert all(_equal(sa["state"][k][n], sb["state"][k][n]) for n in sa["state"][k])
    # checkpoints move between both: resuming either from the other's state continues alike
    a, _ = _run(torch.optim.Adam, kwargs, groups, 3, state=copy.deepcopy(sb))
    b, _ = _run(Adam, kwargs, groups, 3, state=copy.deepcopy(sa))
    assert all(_equal(x, y) for x, y in zip(a, b))


def test_adam_survives_a_copy_and_keeps_buffers_out_of_the_state():
    ps, opt = _run(Adam, {"weight_decay": 1e-2}, lambda ps: ps, steps=2)
    assert set(opt.state_dict()["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    clone = copy.deepcopy(opt)
    for p in clone.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    clone.step()
