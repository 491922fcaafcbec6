"""SharedAdam: Adam whose statistics live in shared memory, so all workers update one set of them."""

import torch


class SharedAdam(torch.optim.Adam):
    """torch.optim.Adam with its state created up front and moved to shared memory.

    Every worker process steps the same `step`, `exp_avg` and `exp_avg_sq` tensors (Hogwild: no lock).
    The step counter is a shared tensor too: a per-process counter would give each worker its own,
    wrong, bias correction.

    The update is Adam's, computed by PyTorch's fused kernel (one pass over each parameter instead of
    a dozen tensor operations; several times faster for this model):
        m = beta1 * m + (1 - beta1) * g            v = beta2 * v + (1 - beta2) * g^2
        p -= lr / (1 - beta1^step) * m / (sqrt(v / (1 - beta2^step)) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=True)
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["step"] = torch.zeros((), dtype=torch.float32)  # the fused kernel's step type
                state["exp_avg"] = torch.zeros_like(p.data)
                state["exp_avg_sq"] = torch.zeros_like(p.data)

    def share_memory(self):
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["step"].share_memory_()
                state["exp_avg"].share_memory_()
                state["exp_avg_sq"].share_memory_()
        return self

    @torch.no_grad()
    def step(self, closure=None):
        # The fused kernel walks each parameter, its gradient and its statistics in memory order, so
        # all must share one layout. A worker's local model keeps its conv weights channels-last
        # (faster convolutions), which would otherwise apply each gradient to the wrong elements.
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.stride() != p.stride():
                    p.grad = torch.empty_like(p).copy_(p.grad)
        return super().step(closure)
