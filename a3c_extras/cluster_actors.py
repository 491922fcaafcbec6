"""What runs on a Ray cluster's machines: a Group per machine, one machine's Hogwild A3C with its workers in a pool.
The main process holds the global weights. Every --sync-interval seconds its poll of a group carries them: the group
answers with what its weights moved since its last answer and takes the global weights plus what its workers moved
meanwhile, so each update reaches the global weights once, at most an interval late (Downpour-style, Dean et al.
2012). A plain class: cluster.py makes it a Ray actor, so importing this module loads no Ray."""

import os
from typing import NamedTuple

import numpy as np
import torch
import torch.multiprocessing as mp
from torch.nn.utils import parameters_to_vector

from a3c_extras.links import SharedCounts
from a3c_extras.pool import ChildSpec, Pool
from a3c_extras.shared import shared_model_and_optimizer
from a3c_extras.supervision import load_shared


def flat_weights(model) -> torch.Tensor:
    """A copy of the model's parameters as one flat vector (the model has no buffers)."""
    return parameters_to_vector(model.parameters()).detach()


def from_ray(array) -> torch.Tensor:
    """A flat vector as Ray hands it over (a read-only array), as a tensor of its own."""
    return torch.from_numpy(np.array(array))


@torch.no_grad()
def add_flat_(model, vector: torch.Tensor) -> None:
    """Add a flat vector to the model's parameters in place (they may be in shared memory)."""
    offset = 0
    for p in model.parameters():
        p.add_(vector[offset : offset + p.numel()].view(p.shape))
        offset += p.numel()


class Report(NamedTuple):
    """A group's answer to a poll: its workers' events; after a sync, what its weights moved (`delta`) and the steps its
    workers took since its last sync; its process (another one: Ray restarted it)."""

    events: list
    delta: np.ndarray | None
    steps: int
    pid: int


class Group:
    """One machine's Hogwild: a shared model and SharedAdam, N `train` workers in a pool (spawned: forking beside Ray's
    threads is unsafe). They start at the group's first sync, from the global weights and the Adam statistics the run
    started from, so that a group Ray restarted rejoins with the global weights."""

    def __init__(self, *, index, name, params, spaces, model_class, optimizer_class, train, **pool):
        torch.set_num_threads(1)
        self.first_rank, self.name, self.args, self.train = index * params.num_processes, name, params, train
        self.model, self.optimizer = shared_model_and_optimizer(params, spaces, model_class, optimizer_class)
        self.sent = flat_weights(self.model)  # the weights as the main process knows them, with the group's last delta
        # The workers' count: the run's at the last poll plus the steps taken here since the last sync; never ahead of
        # the true count, so that no worker stops early at the budget.
        self.shared = SharedCounts(mp.get_context("spawn"), params.num_processes)
        self.counted, self.outbox = 0, []  # counted: the workers' steps (sum of their slots) already synced
        self.pool = Pool(mp.get_context("spawn"), self.shared, self.outbox.append, params, **pool)

    def ready(self) -> int:
        return os.getpid()

    def sync(self, weights=None) -> Report:
        """What moved since the last sync (the delta, and the steps), and the global weights plus what moved since."""
        snapshot, seen = flat_weights(self.model), sum(self.shared.steps[:])
        delta, steps, self.counted = snapshot - self.sent, seen - self.counted, seen
        if weights is not None:  # global weights that hold this group's moves up to `sent`
            weights = from_ray(weights)
            add_flat_(self.model, weights - self.sent)
            snapshot = weights + delta  # as the main process will have it, once it added this delta
        self.sent = snapshot
        return self._report(delta.numpy(), steps)

    def poll(self, weights=None, total: int = 0, statistics: dict | None = None) -> Report:
        """The workers' events; with the global weights (and the run's `total` steps), a sync too. The workers start
        at the first sync that brings the Adam `statistics` the run started from (the main process's first)."""
        self.shared.base.value = total - self.counted  # the workers see total + their steps since the last sync
        self.pool.poll(0)
        if weights is None:
            return self._report(None, 0)
        report = self.sync(weights)
        if statistics is not None and not self.pool.children:  # the workers start from the global weights
            load_shared(self.model, self.optimizer, None, statistics)
            for rank in range(self.first_rank, self.first_rank + self.args.num_processes):
                args = (rank, self.args, self.model, self.optimizer)
                self.pool.start(ChildSpec("worker", rank, self.train, args, where=f"{self.name} "))
        return report

    def _report(self, delta, steps: int) -> Report:
        report = Report(list(self.outbox), delta, steps, os.getpid())
        self.outbox.clear()
        return report

    def stop(self) -> Report:
        """Stop the workers, then sync once more: what they learnt since the last sync is not lost."""
        self.pool.stop()
        return self.sync()

    def optimizer_state(self) -> dict | None:
        return self.optimizer.state_dict() if self.optimizer is not None else None
