import multiprocessing

import torch

from a3c_extras.fast_adam import fused_adam_step
from my_optim import SharedAdam


def in_shared_memory(optimizer):
    optimizer.share_memory()  # the course's share_memory() returns nothing
    return optimizer


def _grad_sequence(steps, shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(shape, generator=g) for shape in shapes] for _ in range(steps)]


def test_matches_torch_adam_over_20_steps():
    torch.manual_seed(0)
    reference = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    shared = [torch.nn.Parameter(p.detach().clone()) for p in reference]
    kwargs = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.001)
    adam = torch.optim.Adam(reference, **kwargs)
    shared_adam = in_shared_memory(SharedAdam(shared, **kwargs))
    for grads in _grad_sequence(20, [p.shape for p in reference]):
        for optimizer, params in ((adam, reference), (shared_adam, shared)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
    for a, b in zip(reference, shared):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
        torch.testing.assert_close(adam.state[a]["exp_avg"], shared_adam.state[b]["exp_avg"], atol=1e-6, rtol=0)
        torch.testing.assert_close(adam.state[a]["exp_avg_sq"], shared_adam.state[b]["exp_avg_sq"], atol=1e-6, rtol=0)
    assert shared_adam.state[shared[0]]["step"].item() == 20


def test_fused_step_updates_as_the_course_step_does():
    """fused_adam_step (the fast path's) and SharedAdam.step (the course's, written out) move the weights
    and the shared statistics alike, over 20 steps."""
    torch.manual_seed(0)
    course = [torch.nn.Parameter(torch.randn(8, 4, 3, 3)), torch.nn.Parameter(torch.randn(5))]
    fused = [torch.nn.Parameter(p.detach().clone()) for p in course]
    course_adam = in_shared_memory(SharedAdam(course, lr=0.01))
    fused_adam = in_shared_memory(SharedAdam(fused, lr=0.01))
    for grads in _grad_sequence(20, [p.shape for p in course]):
        for p, q, g in zip(course, fused, grads):
            p.grad, q.grad = g.clone(), g.clone()
        course_adam.step()
        fused_adam_step(fused_adam)
    for p, q in zip(course, fused):
        torch.testing.assert_close(q, p, atol=1e-6, rtol=0)
        for name in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(fused_adam.state[q][name], course_adam.state[p][name], atol=1e-7, rtol=1e-6)
        assert fused_adam.state[q]["exp_avg"].is_shared()


def test_a_gradient_laid_out_unlike_its_parameter_is_applied_element_by_element():
    """Workers hand channels-last gradients (their local model's layout) to contiguous shared
    parameters; the fused update must be Adam's for each element, as the course's step is."""
    torch.manual_seed(0)
    reference = torch.nn.Parameter(torch.randn(8, 4, 3, 3))
    shared = torch.nn.Parameter(reference.detach().clone())
    adam = SharedAdam([reference], lr=0.1)
    shared_adam = in_shared_memory(SharedAdam([shared], lr=0.1))
    for grad in _grad_sequence(3, [reference.shape]):
        reference.grad = grad[0].clone()
        shared.grad = grad[0].contiguous(memory_format=torch.channels_last)
        adam.step()
        fused_adam_step(shared_adam)
    torch.testing.assert_close(shared, reference, atol=1e-6, rtol=0)


def _child_step(param, optimizer):
    param.grad = torch.ones_like(param)
    optimizer.step()


def test_step_in_a_child_process_is_seen_by_the_parent():
    param = torch.nn.Parameter(torch.zeros(4))
    param.data.share_memory_()
    optimizer = in_shared_memory(SharedAdam([param], lr=0.1))
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_child_step, args=(param, optimizer))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    state = optimizer.state[param]
    assert state["step"].item() == 1  # the shared step counter
    torch.testing.assert_close(state["exp_avg"], torch.full((4,), 0.1))  # (1 - beta1) * grad
    torch.testing.assert_close(state["exp_avg_sq"], torch.full((4,), 0.001))  # (1 - beta2) * grad^2
    torch.testing.assert_close(param.data, torch.full((4,), -0.1))  # first Adam step: -lr * sign(grad)
