r""":class:`torch.optim.Adam` computed in place: the same update (equal to the last bit in nearly every run; across
processes a last-bit difference was seen in about 1 run in 15), without the
temporaries its step allocates for every parameter at every step.

PyTorch's single-tensor Adam computes ``grad + weight_decay * param`` and
``sqrt(exp_avg_sq) / sqrt(bias_correction2)`` as new tensors. For an embedding table of a
large graph (for example ``[U + I, d]`` = 49 MB on the Electronics-scale graph) each is a fresh
allocation above glibc's ``mmap`` threshold, zero-filled page by page by the kernel, and these
allocations cost about as much as the arithmetic. :class:`Adam` writes them into two buffers
per parameter kept between steps (not part of the state, so checkpoints are unchanged).
"""
from __future__ import annotations

import inspect
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor

__all__ = ["Adam"]

# options under which torch.optim.Adam's step is the plain single-tensor update reproduced here
_PLAIN = {"amsgrad": False, "maximize": False, "capturable": False, "differentiable": False}
# the step below fills its lists through torch.optim.Adam's (private) _init_group; a PyTorch
# whose _init_group takes other arguments gets torch.optim.Adam's own step
_INIT_GROUP_ARGS = ["self", "group", "params_with_grad", "grads", "exp_avgs", "exp_avg_sqs",
                    "max_exp_avg_sqs", "state_steps"]
_KNOWN_INIT_GROUP = (list(inspect.signature(torch.optim.Adam._init_group).parameters) == _INIT_GROUP_ARGS
                     if hasattr(torch.optim.Adam, "_init_group") else False)


class Adam(torch.optim.Adam):
    r""":class:`torch.optim.Adam` whose step writes the decayed gradient and the denominator
    into buffers kept between steps (see the module docstring). Parameters, their values after
    every step, the optimiser state and ``state_dict`` are those of :class:`torch.optim.Adam`
    with the same arguments, up to a rare last-bit difference. Groups with other options (``amsgrad``,
    ``maximize``, ``capturable``, ``differentiable``, ``foreach``, ``fused``, decoupled weight
    decay, a tensor ``lr`` or betas), complex or sparse gradients, and parameters off the CPU
    without ``foreach=False`` (PyTorch's multi-tensor update), and PyTorch versions whose Adam
    internals differ take :class:`torch.optim.Adam`'s own step.

    Args:
        params: parameters or parameter groups.
        **kwargs: :class:`torch.optim.Adam`'s arguments, with its defaults.
    """

    def _plain(self, group) -> bool:
        # foreach=None: PyTorch takes its multi-tensor update for parameters off the CPU
        single = group.get("foreach") is False or (
            group.get("foreach") is None and all(p.device.type == "cpu" for p in group["params"]))
        return (_KNOWN_INIT_GROUP and all(bool(group.get(k, v)) == v for k, v in _PLAIN.items())
                and single and not group.get("fused")
                and not group.get("decoupled_weight_decay", False)
                and not isinstance(group["lr"], Tensor)
                and not any(isinstance(b, Tensor) for b in group["betas"])
                and all(not (p.grad.is_sparse or torch.is_complex(p)) for p in group["params"]
                        if p.grad is not None))

    def _buffer(self, p: Tensor, i: int) -> Tensor:
        """Buffer ``i`` of parameter ``p`` (kept in the instance, outside the pickled state)."""
        scratch: Dict[Tensor, List[Tensor]] = self.__dict__.setdefault("_scratch", {})
        bufs = scratch.setdefault(p, [])
        while len(bufs) <= i:
            bufs.append(torch.empty(0, dtype=p.dtype, device=p.device))
        if bufs[i].shape != p.shape:
            bufs[i] = torch.empty_like(p, memory_format=torch.contiguous_format)
        return bufs[i]

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        """One optimisation step (``closure`` re-evaluates the loss, as in PyTorch)."""
        if not all(self._plain(g) for g in self.param_groups):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: List[Tensor] = []
            grads: List[Tensor] = []
            exp_avgs: List[Tensor] = []
            exp_avg_sqs: List[Tensor] = []
            steps: List[Tensor] = []
            self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, [], steps)
            beta1, beta2 = group["betas"]
            lr, weight_decay, eps = group["lr"], group["weight_decay"], group["eps"]
            for param, grad, exp_avg, exp_avg_sq, step_t in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
                step_t += 1
                if weight_decay != 0:
                    grad = torch.add(grad, param, alpha=weight_decay, out=self._buffer(param, 0))
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step = step_t.item()
                bias_correction1 = 1 - beta1 ** step
                bias_correction2 = 1 - beta2 ** step
                step_size = lr / bias_correction1
                bias_correction2_sqrt = bias_correction2 ** 0.5
                denom = torch.sqrt(exp_avg_sq, out=self._buffer(param, 1))
                denom.div_(bias_correction2_sqrt).add_(eps)
                param.addcdiv_(exp_avg, denom, value=-step_size)
        return loss
