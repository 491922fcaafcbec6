# Optimizer
"""The course's my_optim.py: SharedAdam, Adam whose statistics live in shared memory, so every worker
updates one set of them. Its step counter is shared too: one per process would give each worker a
wrong bias correction. Lines marked #+ are not the course's (docs/course.md says why)."""

import math

import torch
import torch.optim as optim


class SharedAdam(optim.Adam):

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0):
        super(SharedAdam, self).__init__(params, lr, betas, eps, weight_decay)
        for group in self.param_groups:
            for p in group['params']:
                state = self.state[p]
                state['step'] = torch.zeros(1)
                state['exp_avg'] = p.data.new().resize_as_(p.data).zero_()
                state['exp_avg_sq'] = p.data.new().resize_as_(p.data).zero_()

    def share_memory(self):
        for group in self.param_groups:
            for p in group['params']:
                state = self.state[p]
                state['step'].share_memory_()
                state['exp_avg'].share_memory_()
                state['exp_avg_sq'].share_memory_()

    def step(self):
        loss = None
        for group in self.param_groups:
            for p in group['params']:
                if p.grad is None:
                    continue
                grad = p.grad.data
                state = self.state[p]
                exp_avg, exp_avg_sq = state['exp_avg'], state['exp_avg_sq']
                beta1, beta2 = group['betas']
                state['step'] += 1
                if group['weight_decay'] != 0:
                    grad = grad.add(p.data, alpha=group['weight_decay'])  #+ add(wd, p.data) is gone
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)  #+ add_(1 - beta1, grad) is gone
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  #+ addcmul_(1 - beta2, ...) is gone
                denom = exp_avg_sq.sqrt().add_(group['eps'])
                bias_correction1 = 1 - beta1 ** state['step'].item()  #+ [0]: .item() gives the number
                bias_correction2 = 1 - beta2 ** state['step'].item()  #+
                step_size = group['lr'] * math.sqrt(bias_correction2) / bias_correction1
                p.data.addcdiv_(exp_avg, denom, value=-step_size)  #+ addcdiv_(-step_size, ...) is gone
        return loss
