"""What runs on the machines of a Ray cluster: one Group per machine, the ParameterServer on main.py's machine.

A Group is one machine's A3C as main.py runs it alone: the course's shared model and SharedAdam in that machine's
shared memory, --num-processes `train` workers on them, Hogwild. The ParameterServer holds the global weights as one
flat float32 vector, and the global step count. Every --sync-interval seconds each group, on its own clock, sends
what its weights moved since its last sync (weights now - weights the server last gave it); the server adds that to
the global weights and answers with them; the group takes them, plus whatever its workers moved during the round
trip. Every worker's update reaches the global weights once, at most one interval late (Downpour-style, as in
Dean et al. 2012, but with the same interval for pushing and fetching).

These classes are plain Python; cluster.py makes them Ray actors (ray.remote), so importing this module loads no Ray.
"""

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.multiprocessing as mp

from a3c_extras.errors import first_line
from a3c_extras.supervision import WorkerLink, child, drain_queue, first_dead, load_shared, stop_processes


def flat_weights(model) -> torch.Tensor:
    """A copy of the model's parameters as one flat vector (the model has no buffers)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


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

    def __init__(self, weights: np.ndarray, steps: int, machines: int):
        self.weights = np.array(weights, dtype=np.float32)  # a writable copy
        self.steps = steps
        self.synced_steps = [0] * machines  # each machine's steps that reached the global weights

    def sync(self, machine: int, delta: np.ndarray, steps: int):
        """Add what one machine's weights moved and the steps it took; answer with the global weights and steps."""
        self.weights += delta
        self.steps += steps
        self.synced_steps[machine] += steps
        return self.weights, self.steps  # Ray copies them out before the next call runs

    def pull(self):
        return self.weights, self.steps, self.synced_steps


@dataclass
class Report:
    """What a group tells the driver at each poll."""

    events: list  # the workers' events since the last poll, as supervision.Run handles them
    steps: int  # agent steps this group took in this sitting
    dead: tuple | None  # (name, why) of a worker that died, or of the sync thread's failure
    sync_ms: list = field(default_factory=list)  # round trips of the syncs since the last poll


class Group:
    """One machine's Hogwild: a shared model and SharedAdam, N `train` workers, and a thread syncing with the
    server. Workers are started with the spawn method: forking a process that runs Ray's threads is unsafe."""

    def __init__(
        self,
        index: int,
        name: str,
        args,
        spaces,
        model_state: dict,
        optimizer_state,
        steps: int,
        server,
        sync_interval: float,
        shared_model_and_optimizer,
        train,
        first_rank: int,
        make_env=None,
    ):
        torch.set_num_threads(1)
        self.index, self.name, self.args, self.server, self.interval = index, name, args, server, sync_interval
        self.model, self.optimizer = shared_model_and_optimizer(args, spaces)
        load_shared(self.model, self.optimizer, model_state, optimizer_state)
        self.at_last_sync = flat_weights(self.model)  # what the server knows of this group
        ctx = mp.get_context("spawn")
        # The workers' counter is this group's view of the global count: the server's at the last sync, plus the
        # steps taken here since. It never runs ahead of the true count, so a worker never stops early at the budget.
        self.counter, self.lock = ctx.Value("q", steps), ctx.Lock()
        self.counted = steps  # the counter's value that the server already knows of
        self.own_steps = 0  # this group's steps that reached the server, this sitting
        self.stop_event, self.events = ctx.Event(), ctx.Queue()
        self.errors, self.outbox, self.sync_ms, self.sync_failure = {}, [], [], None
        self.processes = {}
        for rank in range(first_rank, first_rank + args.num_processes):
            link = WorkerLink(f"{name} worker {rank}", self.stop_event, self.events, make_env=make_env)
            p = ctx.Process(
                target=child, args=(link, train, rank, args, self.model, self.counter, self.lock, self.optimizer)
            )
            p.start()
            self.processes[link.name] = p
        self.syncer = threading.Thread(target=self._sync_every_interval, daemon=True)
        self.syncer.start()

    def ready(self) -> int:
        return len(self.processes)

    def exchange(self, delta: np.ndarray, steps: int):
        """One round trip to the server: (merged weights, global steps)."""
        import ray

        return ray.get(self.server.sync.remote(self.index, delta, steps))

    def sync(self) -> None:
        """Send what moved since the last sync, take the merged weights back, keep what moved meanwhile."""
        snapshot = flat_weights(self.model)
        with self.lock:
            seen = self.counter.value
        start = time.perf_counter()
        merged, total = self.exchange((snapshot - self.at_last_sync).numpy(), seen - self.counted)
        self.sync_ms.append((time.perf_counter() - start) * 1000)
        merged = torch.from_numpy(np.array(merged))  # a copy: Ray's array is read-only
        add_flat_(self.model, merged - snapshot)  # = merged + what the workers moved since the snapshot
        self.at_last_sync = merged
        with self.lock:
            self.own_steps += seen - self.counted
            self.counter.value = total + self.counter.value - seen
            self.counted = total

    def _sync_or_record(self) -> bool:
        """Sync; a failure (the server is gone, or a bug) is kept for the driver, which then stops the run."""
        try:
            self.sync()
            return True
        except Exception as error:
            self.sync_failure = (f"{self.name} sync", f"{type(error).__name__}: {first_line(error)}")
            return False

    def _sync_every_interval(self) -> None:
        while not self.stop_event.wait(self.interval) and self._sync_or_record():
            pass

    def _collect(self, event) -> None:
        if event[0] == "error":
            self.errors[event[1]] = event[2]
        self.outbox.append(event)

    def _report(self, dead) -> Report:
        with self.lock:
            steps = self.own_steps + self.counter.value - self.counted
        events, self.outbox = self.outbox, []
        sync_ms, self.sync_ms = self.sync_ms, []
        return Report(events, steps, dead, sync_ms)

    def poll(self) -> Report:
        drain_queue(self.events, self._collect, timeout=0)
        budget_reached = bool(self.args.max_steps and self.counter.value >= self.args.max_steps)
        return self._report(first_dead(self.processes, self.errors, budget_reached) or self.sync_failure)

    def stop(self) -> Report:
        """Stop the workers, then sync once more: what they learnt since the last sync is not lost."""
        self.stop_event.set()
        self.syncer.join()
        stop_processes(
            self.processes.values(), self.stop_event, lambda timeout: drain_queue(self.events, self._collect, timeout)
        )
        if self.sync_failure is None:
            self._sync_or_record()
        return self._report(None)

    def optimizer_state(self) -> dict | None:
        return self.optimizer.state_dict() if self.optimizer is not None else None
