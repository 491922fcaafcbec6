"""A run as the main process supervises it. Two parts:

- Children: the processes of one machine (workers, the test process): their links (a3c_extras/links.py), reading
  what they tell without ever blocking, replacing one that dies, ending the run when one dies too often, stopping
  them all. A killed child can leave nothing it waits on: see links.py.
- Run: the run itself: the shared model and optimizer resumed, the record (a3c_extras/run_record.py), budgets,
  checkpoints, Ctrl-C, the status line, and the one place where the children's events are handled.
"""

import multiprocessing as mp
import os
import pickle
import signal
import sys
import time
from collections import deque
from contextlib import contextmanager
from multiprocessing.connection import wait as wait_for_any

from a3c_extras.checkpoints import CheckpointError, checkpoint, load_checkpoint
from a3c_extras.cli import complete, fail
from a3c_extras.dashboard import Dashboard
from a3c_extras.errors import describe_exit, describe_os_error
from a3c_extras.links import FRAME, ChildBody, SharedCounts, WorkerLink, budget_reached, child_name, watch_parent
from a3c_extras.run_record import RunRecord
from a3c_extras.schedule import learning_rate

__all__ = ["Children", "Run", "WorkerLink", "budget_reached", "load_shared"]

STOP_GRACE = 5  # seconds the children have to stop before they are killed


class Child:
    """One child process and what the supervisor knows of it: enough to start it again."""

    def __init__(self, body: ChildBody, args: tuple | None, kwargs: dict, rank: int | None):
        self.body, self.args, self.kwargs, self.rank = body, args, kwargs, rank
        self.slot, self.target = body.link.slot, body.target
        self.name = body.name or (child_name(body.target, (rank,)) if rank is not None else f"child {self.slot}")
        self.process, self.reader = None, None
        self.buffer = b""  # bytes of a message not yet whole
        self.error = None  # the one line of its last exception
        self.deaths = deque()  # when it died, within the restart window
        self.restarts = 0
        self.finished = False  # ended cleanly when the run stopped


class Children:
    """The child processes of one machine, supervised. `handle(event)` gets everything they tell and one
    ("restart", name, why, restarts) event per replacement; `failure` is (name, why) once one died more than
    max_restarts times within restart_window seconds.

    A replacement is started with the dead child's arguments. multiprocessing forgets a process's target and
    arguments once it has started it, so a child made by body() alone (main.py's mp.Process calls) is started again
    with `make_args(target, rank)`, its rank being the first argument it was given (the child writes it in shared
    memory first thing; in the order body() was called otherwise)."""

    def __init__(
        self,
        ctx,
        shared: SharedCounts,
        handle,
        *,
        max_restarts: int,
        restart_window: float,
        link_options: dict,
        make_args=None,
    ):
        self.ctx, self.shared, self.handle, self.make_args = ctx, shared, handle, make_args
        self.max_restarts, self.restart_window, self.link_options = max_restarts, restart_window, link_options
        self.slots = 0
        self.children: dict[int, Child] = {}
        self.waiting = []  # children of body() whose process supervise() has not been given yet, in order
        self.failure = None

    def body(
        self,
        target,
        name: str | None = None,
        args: tuple | None = None,
        kwargs: dict | None = None,
        rank: int | None = None,
        **link_options,
    ) -> ChildBody:
        """The target of a new child process; `args` are those it will be started with, when known; link_options
        override the children's (see WorkerLink.of_run)."""
        slot, self.slots = self.slots, self.slots + 1
        if slot >= len(self.shared.steps):
            raise ValueError(f"more children than the {len(self.shared.steps)} the run has room for")
        child = Child(self.new_body(target, name, slot, link_options), args, kwargs or {}, rank)
        self.waiting.append(child)
        return child.body

    def new_body(self, target, name, slot: int, link_options: dict) -> ChildBody:
        reader, writer = self.ctx.Pipe(duplex=False)
        link = WorkerLink.of_run(self.shared, slot, writer, **(self.link_options | link_options))
        body = ChildBody(target, link, name)
        body.link_options = link_options
        body.reader = reader  # the supervisor's end, taken by adopt()
        return body

    def adopt(self, processes) -> None:
        """Supervise processes started with targets from body(), in the order body() made them."""
        if len(processes) != len(self.waiting):
            raise ValueError(f"{len(processes)} processes for the {len(self.waiting)} targets of run.child()")
        for p, child in zip(processes, self.waiting):
            self.attach(child, p)
        self.waiting = []

    def attach(self, child: Child, process) -> None:
        body = child.body
        body.link.writer.close()  # the child has its copy; the supervisor only reads
        child.reader, body.reader = body.reader, None
        os.set_blocking(child.reader.fileno(), False)
        child.process = process
        self.children[child.slot] = child

    def start(self, target, args: tuple, name: str | None = None):
        """Start and supervise one child process: target(*args, link=...)."""
        body = self.body(target, name, args)
        p = self.ctx.Process(target=body, args=args)
        p.start()
        self.attach(self.waiting.pop(), p)
        return p

    def alive(self) -> list[Child]:
        return [c for c in self.children.values() if c.process is not None]

    def poll(self, timeout: float) -> None:
        """Hand on what the children told, for up to `timeout` seconds; notice the dead (and replace them)."""
        children = self.alive()
        by_fd = {c.reader.fileno(): c for c in children}
        by_sentinel = {c.process.sentinel: c for c in children}
        if not children:
            time.sleep(timeout)
            return
        for ready in wait_for_any([*by_fd, *by_sentinel], timeout):
            if ready in by_fd:
                self.read(by_fd[ready])
        for child in children:
            if child.process.exitcode is not None:
                self.read(child)  # what it told before it ended
                self.ended(child)

    def read(self, child: Child) -> None:
        """Whatever a child's pipe holds now, without waiting; each whole message handed on."""
        for _ in range(64):  # a bounded loop: children that talk fast cannot hold the supervisor here
            try:
                data = os.read(child.reader.fileno(), 1 << 16)
            except BlockingIOError:
                break
            if not data:
                break
            child.buffer += data
        while len(child.buffer) >= FRAME.size:
            (size,) = FRAME.unpack_from(child.buffer)
            if len(child.buffer) < FRAME.size + size:
                break
            payload, child.buffer = child.buffer[FRAME.size : FRAME.size + size], child.buffer[FRAME.size + size :]
            try:
                events = pickle.loads(payload)
            except Exception:  # noqa: BLE001 - cannot happen with one writer per pipe; dropped if it does
                continue
            for event in events:
                if event[0] == "error":
                    child.error = event[2]
                self.handle(event)

    def ended(self, child: Child) -> None:
        """A child's process ended: cleanly at the end of the run, or died; a dead one is replaced."""
        p = child.process
        exitcode = p.exitcode
        p.join()
        p.close()  # its sentinel
        child.reader.close()
        child.process, child.buffer = None, b""
        if exitcode == 0 and (self.shared.stop.value or budget_reached(self.shared.total(), self.max_steps)):
            child.finished = True
            return
        why = child.error or describe_exit(exitcode)
        child.error = None
        if child.body.name is None and self.shared.ranks[child.slot] >= 0:  # the rank it was really given
            child.name = child_name(child.target, (self.shared.ranks[child.slot],))
        if self.shared.stop.value or self.failure is not None:
            return  # the run is stopping anyway
        now = time.time()
        child.deaths.append(now)
        while child.deaths and child.deaths[0] < now - self.restart_window:
            child.deaths.popleft()
        if len(child.deaths) > self.max_restarts:
            self.failure = (child.name, f"{why} (died {len(child.deaths)} times within {self.restart_window:g} s)")
            return
        if child.args is None:
            rank = self.shared.ranks[child.slot]
            child.args = self.make_args(child.target, rank if rank >= 0 else child.rank)
        child.body = self.new_body(child.target, child.body.name, child.slot, child.body.link_options)
        new = type(p)(target=child.body, args=child.args, kwargs=child.kwargs, daemon=p.daemon)
        new.start()
        self.attach(child, new)
        child.restarts += 1
        self.handle(("restart", child.name, why, child.restarts))

    @property
    def max_steps(self) -> int:
        return self.link_options.get("max_steps", 0)

    def stop(self) -> None:
        """Ask every child to stop, hand on what they still tell, kill those left after STOP_GRACE seconds."""
        self.shared.stop.value = 1
        deadline = time.time() + STOP_GRACE
        while self.alive() and time.time() < deadline:
            self.poll(0.1)
        for child in self.alive():
            child.process.kill()
            child.process.join()
            self.read(child)
            child.error = child.error or "killed: it did not stop within 5 s"
            self.ended(child)


def load_shared(shared_model, optimizer, model_state: dict, optimizer_state: dict | None) -> None:
    """Saved weights and optimizer statistics into the shared model and optimizer, left in shared memory."""
    shared_model.load_state_dict(model_state)  # into the shared tensors
    if optimizer is not None and optimizer_state:
        optimizer.load_state_dict(optimizer_state)
        optimizer.share_memory()  # load_state_dict made new tensors of the statistics


@contextmanager
def stop_signals():
    """Ctrl-C and SIGTERM ask for a clean stop (the names of those received, in a list) while the loop runs."""
    received = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: received.append(signal.Signals(signum).name))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def connect(params, link: WorkerLink | None = None, name: str = "worker"):
    """What train and test do first: params completed with the defaults of every field they lack (a learner's
    own Params has the course's eight), and the link to the run, or one to no run that ends this process when
    its parent ends (the course's main.py body starts the children so)."""
    params = complete(params)
    if link is None:
        link = WorkerLink(name, max_steps=params.max_steps, max_nonfinite=params.max_nonfinite)
        watch_parent()
    link.params, link.start_steps = params, link.total_steps()
    return params, link


class Run:
    """The main process's side of a run. Created after the shared model and optimizer, before the processes:
    with --resume it loads the checkpoint into them. `listeners` get the run's figures as they come (a dashboard):
    train_game(steps, ret, length), eval_episode(steps, reward, length), eval_cut_short(steps, reward, length),
    losses(steps, policy, value, entropy, grad_norm), speed(steps, sps, lr); each method is optional."""

    def __init__(self, args, shared_model, optimizer, ctx=mp, *, make_env=None, extra_children: int = 0):
        args = complete(args)  # a learner's own Params too
        self.args, self.shared_model, self.optimizer = args, shared_model, optimizer
        self.counter_start, self.elapsed_before, best = 0, 0.0, None
        self.resumed = bool(args.resume)
        if self.resumed:
            try:
                data = load_checkpoint(args.resume, shared_model.actor_linear.out_features)
            except CheckpointError as error:
                fail(f"main.py: error: {error}")
            load_shared(shared_model, optimizer, data["model"], data.get("optimizer"))
            self.counter_start = data["counter"]
            self.elapsed_before = data.get("elapsed") or 0.0
            # the best mean of --best-window episodes; runs from before it kept the best single episode
            best = data.get("best_reward") if "best_window" in data["args"] else None
        try:
            self.record = RunRecord(
                args.run_dir, args, {"resumed_from": args.resume, "resumed_at_steps": self.counter_start}, self.resumed
            )
        except OSError as error:
            fail(f"main.py: error: cannot write the run directory {args.run_dir}: {describe_os_error(error)}")
        self.run_dir = self.record.dir
        self.shared = SharedCounts(ctx, args.num_processes + 1 + extra_children, self.counter_start, best)
        self.children = Children(
            ctx,
            self.shared,
            self.handle,
            max_restarts=args.max_restarts,
            restart_window=args.restart_window,
            link_options={
                "make_env": make_env,
                "max_steps": args.max_steps,
                "max_nonfinite": args.max_nonfinite,
                "best_path": str(self.run_dir / "best.pt"),
            },
            make_args=self.restart_args,
        )
        self.workers_made = 0
        self.listeners = [] if args.no_tensorboard else [Dashboard(self.run_dir)]  # the run's TensorBoard charts
        self.recent_returns = deque(maxlen=100)
        self.last_eval = None
        self.nonfinite = {}
        self.restarts = 0
        self.start_time = time.time()
        print(
            f"Run directory: {self.run_dir}  ({self.workers_description()} on {args.env_name}"
            f"{', resumed at step ' + format(self.counter_start, ',') if self.resumed else ''})",
            flush=True,
        )

    def workers_description(self) -> str:
        return f"{self.args.num_processes} workers"

    def child(self, target) -> ChildBody:
        """The target of a child process of this run: mp.Process(target=run.child(train), args=(rank, ...)) runs
        train(rank, ..., link=<its link>) in the child, which the run names, watches and replaces if it dies."""
        if child_name(target, (0,)) == "test":  # stopped by the run, as it always was: the step budget is the workers'
            return self.children.body(target, rank=self.args.num_processes, max_steps=0)
        self.workers_made += 1
        return self.children.body(target, rank=self.workers_made - 1)

    def restart_args(self, target, rank: int) -> tuple:
        """What main.py starts a child with, as the course does: test(rank, params, shared_model) and
        train(rank, params, shared_model, optimizer); a replacement gets the same."""
        if child_name(target, (rank,)) == "test":
            return rank, self.args, self.shared_model
        return rank, self.args, self.shared_model, self.optimizer

    def steps(self) -> int:
        return self.shared.total()

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.start_time

    def notify(self, method: str, *values) -> None:
        for listener in self.listeners:
            if hasattr(listener, method):
                getattr(listener, method)(*values)

    def handle(self, event) -> None:
        """Every event of every child (and of a cluster's machines) comes here."""
        kind = event[0]
        if kind == "train":
            _, rank, steps, game_return, length = event
            self.record.game("train", self.elapsed(), steps, rank, game_return, length)
            self.recent_returns.append(game_return)
            self.notify("train_game", steps, game_return, length)
        elif kind in ("eval", "eval_cut"):  # eval_cut: one the stuck-agent guard cut short, not a finished game
            _, _, steps, reward, length = event
            self.record.game(kind, self.elapsed(), steps, None, reward, length)
            cut_short = kind == "eval_cut"
            self.last_eval = f"{reward} (cut short)" if cut_short else reward
            self.notify("eval_cut_short" if cut_short else "eval_episode", steps, reward, length)
        elif kind == "losses":
            self.notify("losses", *event[2:])
        elif kind == "nonfinite":
            self.nonfinite[event[1]] = event[2]
        elif kind == "write_failed":
            self.record.write_failed(event[1], event[2], self.elapsed(), self.steps())
        elif kind == "restart":  # a child here, a worker on a cluster's machine, or a machine's group
            _, name, why, restarts = event
            self.restarts += 1
            print(f"main.py: {name} died: {why}; restarted (its restart {restarts})", file=sys.stderr, flush=True)
            self.record.event(self.elapsed(), self.steps(), "restart", name, why)

    def save_all(self, steps: int | None = None, final: bool = False) -> bool:
        """The checkpoint (of `steps` agent steps, by default the run's count) and the learning curve; False if the
        checkpoint could not be written."""
        steps = self.steps() if steps is None else steps
        saved = self.record.save_checkpoint(
            checkpoint(self.shared_model, self.optimizer, steps, self.elapsed(), self.shared.best_reward(), self.args),
            self.elapsed(),
            final=final,
            retry_in=self.args.save_interval,
        )
        self.record.plot_curve(f"A3C on {self.args.env_name}", self.elapsed(), steps)
        return saved

    def status_line(self) -> str:
        steps = self.steps()
        rate = (steps - self.counter_start) / max(time.time() - self.start_time, 1e-9)
        parts = [f"steps {steps:,}", f"{rate:,.0f} steps/s"]
        if self.recent_returns:
            parts.append(
                f"train return (last {len(self.recent_returns)}) "
                f"{sum(self.recent_returns) / len(self.recent_returns):.1f}"
            )
        parts.append(f"last eval {self.last_eval if self.last_eval is not None else '-'}")
        best = self.shared.best_reward()
        parts.append(f"best (mean of {self.args.best_window}) {f'{best:g}' if best is not None else '-'}")
        if self.nonfinite:
            parts.append(f"skipped non-finite updates {sum(self.nonfinite.values())}")
        if self.restarts:
            parts.append(f"restarts {self.restarts}")
        if self.record.failed_writes:
            parts.append(f"failed writes {self.record.failed_writes}")
        left = []
        if self.args.max_steps:
            left.append(f"{max(self.args.max_steps - steps, 0):,} steps")
        if self.args.max_time:
            left.append(f"{max(self.args.max_time - (time.time() - self.start_time), 0):,.0f} s")
        if left:
            parts.append("left " + ", ".join(left))
        return " | ".join(parts)

    def failure(self):
        """(name, why) of what ends the run with status 1: a child that died too often."""
        return self.children.failure

    def keep_up(self) -> None:
        """Called every half second of the run: nothing on one machine (a cluster polls its machines here)."""

    def stop_children(self) -> None:
        self.children.stop()

    def stop_reason(self, signals: list) -> str | None:
        if signals:
            return f"stopped by {signals[0]}"
        if budget_reached(self.steps(), self.args.max_steps):
            return f"step budget of {self.args.max_steps:,} reached"
        if self.args.max_time and time.time() - self.start_time >= self.args.max_time:
            return f"time budget of {self.args.max_time:g} s reached"
        return None

    def chart_speed(self, since: float, steps_then: int) -> tuple[float, int]:
        """Tell the dashboard the agent steps per second since `since` (when the run had `steps_then` steps) and
        the learning rate now; returns (now, the steps now) for the next time."""
        now, steps = time.time(), self.steps()
        if now > since:
            self.notify("speed", steps, (steps - steps_then) / (now - since), learning_rate(self.args, steps))
        return now, steps

    def supervise(self, processes) -> int:
        """Until a budget, Ctrl-C or a child that dies too often: record, checkpoint, print the status, replace
        dead children. Then stop every child, save and return the exit status: 0, or 1 if a child died too often
        or the final checkpoint could not be written."""
        self.children.adopt(processes)
        last_save = last_status = time.time()
        status_steps = self.steps()
        with stop_signals() as signals:
            while True:
                self.children.poll(0.5)
                self.keep_up()
                reason, failure = self.stop_reason(signals), self.failure()
                if reason or failure:
                    break
                now = time.time()
                if now - last_save >= self.args.save_interval:
                    self.save_all()
                    last_save = now
                if now - last_status >= self.args.status_interval:
                    print(self.status_line(), flush=True)
                    last_status, status_steps = self.chart_speed(last_status, status_steps)
            if self.steps() > status_steps:  # the last speed and rate, once: a run shorter than --status-interval
                self.chart_speed(last_status, status_steps)  # has no other
            self.stop_children()
            failure = failure or self.failure()
            saved = self.save_all(final=True)
            self.record.close()
            self.notify("close")
        print(self.status_line(), flush=True)
        if failure:
            name, why = failure
            print(
                f"main.py: {name} died: {why}; other processes stopped, "
                f"{'checkpoint saved in ' + str(self.run_dir) if saved else 'final checkpoint not written'}",
                file=sys.stderr,
                flush=True,
            )
            return 1
        if not saved:
            print(
                f"main.py: error: {reason}, but the final checkpoint could not be written; "
                f"{self.record.last_good_description()}",
                file=sys.stderr,
                flush=True,
            )
            return 1
        print(f"{reason}; checkpoint saved in {self.run_dir}", flush=True)
        return 0
