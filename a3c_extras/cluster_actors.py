"""What runs on a Ray cluster's machines: a Group per machine (one machine's Hogwild A3C, its workers in a pool), the
ParameterServer on main.py's. Every --sync-interval seconds a group sends what its weights moved since its last sync,
the server adds it to the global weights and answers with them, and the group takes them plus what its workers moved
meanwhile: each update reaches the global weights once, at most an interval late (Downpour-style, Dean et al. 2012).
Plain classes: cluster.py makes them Ray actors, so importing this module loads no Ray."""

import os
import threading
import time
from typing import NamedTuple

import numpy as np
import torch
import torch.multiprocessing as mp
from torch.nn.utils import parameters_to_vector

from a3c_extras.errors import first_line
from a3c_extras.events import GaveUp
from a3c_extras.links import SharedCounts
from a3c_extras.pool import ChildSpec, Pool
from a3c_extras.shared import shared_model_and_optimizer
from a3c_extras.supervision import load_shared


def flat_weights(model) -> torch.Tensor:
    """A copy of the model's parameters as one flat vector (the model has no buffers)."""
    return parameters_to_vector(model.parameters()).detach()


def _parts(model, vector: torch.Tensor):
    """Each parameter of the model with its part of a flat vector, shaped like it."""
    offset = 0
    for p in model.parameters():
        yield p, vector[offset : offset + p.numel()].view(p.shape)
        offset += p.numel()


@torch.no_grad()
def add_flat_(model, vector: torch.Tensor) -> None:
    """Add a flat vector to the model's parameters in place (they may be in shared memory)."""
    for p, part in _parts(model, vector):
        p.add_(part)


@torch.no_grad()
def copy_flat_(model, vector: torch.Tensor) -> None:
    """Set the model's parameters to a flat vector, in place."""
    for p, part in _parts(model, vector):
        p.copy_(part)


class ParameterServer:
    """The global weights and the global step count; groups add to them, the driver reads them."""

    def __init__(self, weights: np.ndarray, steps: int, machines: int, optimizer_state: dict | None = None):
        self.weights = np.array(weights, dtype=np.float32)  # a writable copy
        self.steps = steps
        self.synced_steps = [0] * machines  # each machine's steps that reached the global weights
        self.optimizer_state = optimizer_state  # the SharedAdam statistics the run started from

    def start_state(self):
        """What a group starts from: the global weights and steps, and the statistics the run started from."""
        return self.weights, self.steps, self.optimizer_state

    def sync(self, machine: int, delta: np.ndarray, steps: int):
        """Add what one machine's weights moved and the steps it took; answer with the global weights and steps."""
        self.weights += delta
        self.steps += steps
        self.synced_steps[machine] += steps
        return self.weights, self.steps  # Ray copies them out before the next call runs

    def pull(self):
        return self.weights, self.steps, self.synced_steps


class Report(NamedTuple):
    """A group's answer to a poll: its events and syncs' round trips since the last, and its process (another one:
    Ray restarted it)."""

    events: list
    sync_ms: list
    pid: int


class Group:
    """One machine's Hogwild: a shared model and SharedAdam, N `train` workers in a pool (spawned: forking beside
    Ray's threads is unsafe), a thread syncing with the server. It starts from the server's weights and steps (tests:
    model_state, steps), so one Ray restarted rejoins with the global weights, and the run's first Adam statistics."""

    def __init__(
        self,
        *,
        index: int,
        name: str,
        params,
        spaces,
        server,
        model_class,
        optimizer_class,
        train,
        first_rank: int,
        make_env=None,
        model_state: dict | None = None,
        optimizer_state=None,
        steps: int = 0,
    ):
        torch.set_num_threads(1)
        if isinstance(server, str):  # the server's name: Ray keeps a restartable actor's handle arguments badly
            import ray

            server = ray.get_actor(server)
        self.index, self.name, self.args, self.server = index, name, params, server
        self.interval = params.sync_interval
        self.model, self.optimizer = shared_model_and_optimizer(params, spaces, model_class, optimizer_class)
        if model_state is None:  # from the server: at the first start as after a restart, the global weights
            weights, steps, optimizer_state = self.start_state()
            copy_flat_(self.model, torch.from_numpy(np.array(weights)))
            model_state = self.model.state_dict()
        load_shared(self.model, self.optimizer, model_state, optimizer_state)
        self.at_last_sync = flat_weights(self.model)  # what the server knows of this group
        ctx = mp.get_context("spawn")
        # The workers' count: the server's at the last sync plus the steps taken here since; never ahead of the true
        # count, so that no worker stops early at the budget.
        self.shared = SharedCounts(ctx, params.num_processes, base=steps)
        self.counted = 0  # the workers' steps (sum of their slots) that the server already knows of
        self.outbox, self.sync_ms, self.sync_failed = [], [], False
        self.stopping = threading.Event()  # the sync thread's, inside this process only
        self.pool = Pool(ctx, self.shared, self.outbox.append, params, make_env)
        for rank in range(first_rank, first_rank + params.num_processes):
            args = (rank, params, self.model, self.optimizer)
            self.pool.start(ChildSpec("worker", rank, train, args, where=f"{name} "))
        self.syncer = threading.Thread(target=self._sync_every_interval, daemon=True)
        self.syncer.start()

    def ready(self) -> int:
        return len(self.pool.children)

    def start_state(self):
        import ray

        return ray.get(self.server.start_state.remote())

    def exchange(self, delta: np.ndarray, steps: int):
        """One round trip to the server: (merged weights, global steps)."""
        import ray

        return ray.get(self.server.sync.remote(self.index, delta, steps))

    def sync(self) -> None:
        """Send what moved since the last sync, take the merged weights back, keep what moved meanwhile."""
        snapshot = flat_weights(self.model)
        seen = sum(self.shared.steps[:])
        start = time.perf_counter()
        merged, total = self.exchange((snapshot - self.at_last_sync).numpy(), seen - self.counted)
        self.sync_ms.append((time.perf_counter() - start) * 1000)
        merged = torch.from_numpy(np.array(merged))  # a copy: Ray's array is read-only
        add_flat_(self.model, merged - snapshot)  # = merged + what the workers moved since the snapshot
        self.at_last_sync = merged
        self.counted = seen
        self.shared.base.value = total - seen  # one write: the workers' view is now total + their steps since

    def _sync_or_give_up(self) -> bool:
        """Sync; a failure (the server is gone, or a bug) is told to the driver (GaveUp), which stops the run."""
        try:
            self.sync()
            return True
        except Exception as error:
            self.sync_failed = True
            self.outbox.append(GaveUp(f"{self.name} sync", f"{type(error).__name__}: {first_line(error)}"))
            return False

    def _sync_every_interval(self) -> None:
        while not self.stopping.wait(self.interval) and self._sync_or_give_up():
            pass

    def _report(self) -> Report:
        report = Report(list(self.outbox), self.sync_ms, os.getpid())
        self.outbox[:], self.sync_ms = [], []
        return report

    def poll(self) -> Report:
        self.pool.poll(0)
        return self._report()

    def stop(self) -> Report:
        """Stop the workers, then sync once more: what they learnt since the last sync is not lost."""
        self.stopping.set()
        self.syncer.join()
        self.pool.stop()
        if not self.sync_failed:
            self._sync_or_give_up()
        return self._report()

    def optimizer_state(self) -> dict | None:
        return self.optimizer.state_dict() if self.optimizer is not None else None
