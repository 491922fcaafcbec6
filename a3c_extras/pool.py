"""The pool of a run's child processes on one machine, each known by its ChildSpec (role, rank, target, arguments)
from the moment the run makes it: started or adopted, read without blocking, its events handed to `emit`; one that
dies is started again with the same arguments, or the restart policy gives up on it (GaveUp ends the run)."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for_any

from a3c_extras.errors import describe_exit
from a3c_extras.events import ChildError, GaveUp, Restarted
from a3c_extras.links import ChildBody, Inbox, SharedCounts, WorkerLink, budget_reached
from a3c_extras.restarts import RestartPolicy

STOP_GRACE = 5  # seconds the children have to stop before they are killed


@dataclass
class ChildSpec:
    """One child of the run: `target(*args, link=...)` in a process of its own, as often as it is started."""

    role: str  # "worker" or "test"
    rank: int
    target: Callable
    args: tuple
    where: str = ""  # on a cluster, the machine: "machine 1 (10.0.0.2) "

    @property
    def name(self) -> str:
        return f"{self.where}{'test' if self.role == 'test' else f'worker {self.rank}'}"


@dataclass
class Child:
    spec: ChildSpec
    slot: int  # its step count's slot in the shared counts
    body: ChildBody
    inbox: Inbox
    process: object = None
    error: str | None = None  # the one line of its last exception


class Pool:
    """The child processes of one machine, under the run's restart policy and budgets (args); the test process
    does not stop at the step budget (the run stops it). `make_env` and `best_path` go to every child's WorkerLink."""

    def __init__(self, ctx, counts: SharedCounts, emit, args, make_env=None, best_path: str | None = None):
        self.ctx, self.counts, self.emit, self.max_steps = ctx, counts, emit, args.max_steps
        self.policy = RestartPolicy(args.max_restarts, args.restart_window)
        self.link_options = dict(
            counts=counts, make_env=make_env, max_nonfinite=args.max_nonfinite, best_path=best_path
        )
        self.children: list[Child] = []
        self.stopping = False

    def body(self, spec: ChildSpec) -> ChildBody:
        """The target of the child's process, for main.py's mp.Process(target=..., args=spec.args)."""
        slot = len(self.children)
        if slot >= len(self.counts.steps):
            raise ValueError(f"more children than the {len(self.counts.steps)} the run has room for")
        self.children.append(self._wire(Child(spec, slot, None, None)))
        return self.children[-1].body

    def _wire(self, child: Child) -> Child:
        """A new pipe and link for the child's next process."""
        reader, writer = self.ctx.Pipe(duplex=False)
        max_steps = 0 if child.spec.role == "test" else self.max_steps
        link = WorkerLink(child.spec.name, slot=child.slot, writer=writer, max_steps=max_steps, **self.link_options)
        child.body, child.inbox = ChildBody(child.spec.target, link), Inbox(reader)
        return child

    def adopt(self, processes) -> None:
        """Watch processes started with the targets of body(), in the order body() made them."""
        waiting = [c for c in self.children if c.process is None]
        if len(processes) != len(waiting):
            raise ValueError(f"{len(processes)} processes for the {len(waiting)} children the run made")
        for child, process in zip(waiting, processes):
            self._launch(child, process)

    def start(self, spec: ChildSpec):
        """Make, start and watch one child."""
        self.body(spec)
        return self._launch(self.children[-1])

    def _launch(self, child: Child, process=None):
        """Watch the child's process, started here unless given (main.py starts its own)."""
        if process is None:
            process = self.ctx.Process(target=child.body, args=child.spec.args)
            process.start()
        child.body.link.writer.close()  # the child has its copy; the pool only reads
        child.process = process
        return process

    def alive(self) -> list[Child]:
        return [c for c in self.children if c.process is not None]

    def poll(self, timeout: float) -> None:
        """Hand on what the children told, for up to `timeout` seconds; notice the dead (and replace them)."""
        children = self.alive()
        if not children:
            time.sleep(timeout)
            return
        by_fd = {c.inbox.fileno(): c for c in children}
        for ready in wait_for_any([*by_fd, *(c.process.sentinel for c in children)], timeout):
            if ready in by_fd:
                self._read(by_fd[ready])
        for child in children:
            if child.process.exitcode is not None:
                self._read(child)  # what it told before it ended
                self._ended(child)

    def _read(self, child: Child) -> None:
        for event in child.inbox.read():
            if isinstance(event, ChildError):
                child.error = event.why
            else:
                self.emit(event)

    def _ended(self, child: Child) -> None:
        """A child's process ended: cleanly at the end of the run, or died; a dead one is started again."""
        process, exitcode = child.process, child.process.exitcode
        process.join()
        process.close()  # its sentinel
        child.inbox.close()
        child.process = None
        stopped = self.stopping or self.counts.stop.value
        if exitcode == 0 and (stopped or budget_reached(self.counts.total(), self.max_steps)):
            return  # it ended cleanly, with the run
        why, child.error = child.error or describe_exit(exitcode), None
        if stopped:
            return  # the run is stopping anyway
        gave_up = self.policy.died(child.spec.name, why)
        if gave_up is not None:
            self.emit(GaveUp(child.spec.name, gave_up))
            return
        self._launch(self._wire(child))
        self.emit(Restarted(child.spec.name, why, self.policy.restarts[child.spec.name]))

    def stop(self) -> None:
        """Ask every child to stop, hand on what they still tell; kill those left after STOP_GRACE seconds."""
        self.stopping = True
        self.counts.stop.value = 1
        deadline = time.monotonic() + STOP_GRACE
        while self.alive() and time.monotonic() < deadline:
            self.poll(0.1)
        for child in self.alive():
            child.process.kill()
            child.process.join()
            self._read(child)
            self._ended(child)
