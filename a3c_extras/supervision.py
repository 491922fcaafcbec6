"""A run as the main process supervises it: the shared model resumed, the pool of children (pool.py), and the loop
that hands their events to the run's jobs (jobs.py) until a budget, Ctrl-C or a failure ends it."""

import multiprocessing as mp
import signal
import sys
import time
from contextlib import contextmanager

from a3c_extras import frame_stats, jobs, memory, recipes
from a3c_extras.checkpoints import CheckpointError, checkpoint, load_checkpoint
from a3c_extras.cli import complete, fail
from a3c_extras.dashboard import Dashboard
from a3c_extras.errors import describe_os_error
from a3c_extras.links import SharedCounts
from a3c_extras.pool import ChildSpec, Pool
from a3c_extras.run_record import RunRecord

__all__ = ["Run", "load_shared"]


def load_shared(shared_model, optimizer, model_state: dict | None, optimizer_state: dict | None) -> None:
    """Saved weights and optimizer statistics into the shared model and optimizer, left in shared memory."""
    if model_state is not None:
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


class Run:
    """The main process's side of a run, made after the shared model and optimizer (--resume loads into them) and
    before the processes, whose targets main.py makes with worker(train) and test_process(test)."""

    def __init__(self, args, shared_model, optimizer, ctx=mp, *, make_env=None):
        args = complete(args)  # a learner's own Params too
        memory.check(args, ctx)  # a run that would not fit stops here, before its directory and its children
        self.args, self.shared_model, self.optimizer = args, shared_model, optimizer
        self.start_steps, self.elapsed_before, best = 0, 0.0, None
        if args.resume:
            try:
                data = load_checkpoint(args.resume, shared_model.actor_linear.out_features)
            except CheckpointError as error:
                fail(f"main.py: error: {error}")
            load_shared(shared_model, optimizer, data["model"], data.get("optimizer"))
            self.start_steps, self.elapsed_before = data["counter"], data.get("elapsed") or 0.0
            # the best mean of --best-window episodes; runs from before it kept the best single episode
            best = data.get("best_reward") if "best_window" in data["args"] else None
        extra = {"resumed_from": args.resume, "resumed_at_steps": self.start_steps}
        try:
            self.record = RunRecord(args.run_dir, args, extra, bool(args.resume))
        except OSError as error:
            fail(f"main.py: error: cannot write the run directory {args.run_dir}: {describe_os_error(error)}")
        self.counts = SharedCounts(ctx, args.num_processes + 1, self.start_steps, best)  # the workers, the test
        self.pool = Pool(ctx, self.counts, self.emit, args, make_env, best_path=str(self.record.dir / "best.pt"))
        self.started = time.monotonic()
        self.jobs = [jobs.Saver(self), jobs.StatusLine(self), jobs.Recorder(self)]
        if not args.no_tensorboard:
            self.jobs.append(Dashboard(self.record.dir))  # the run's TensorBoard charts

    # ---------------------------------------------------------------- the children, as main.py makes them

    def worker(self, train):
        """The target of the next worker (made in rank order): train(rank, ..., link=<its link>), watched, replaced."""
        rank = sum(c.spec.role == "worker" for c in self.pool.children)
        return self.pool.body(ChildSpec("worker", rank, train, (rank, self.args, self.shared_model, self.optimizer)))

    def test_process(self, test, rank: int | None = None):
        """The target of the test process, whose rank is the number of workers (of every machine, on a cluster)."""
        rank = self.args.num_processes if rank is None else rank
        return self.pool.body(ChildSpec("test", rank, test, (rank, self.args, self.shared_model)))

    # ---------------------------------------------------------------- what the jobs read

    def steps(self) -> int:
        return self.counts.total()

    def sitting_seconds(self) -> float:
        return time.monotonic() - self.started

    def elapsed(self) -> float:
        """Seconds of training over every sitting of the run."""
        return self.elapsed_before + self.sitting_seconds()

    def emit(self, event) -> None:
        """Every event of the run (its children's, its machines', its own) goes to every job."""
        for job in self.jobs:
            job.on_event(event)

    def describe(self) -> str:
        """A part of the status line of the run's own (a cluster's machines); none on one machine."""
        return ""

    def save(self, steps: int | None = None, final: bool = False) -> bool:
        """The checkpoint (of `steps`, by default the run's count) and the curve; False if it could not be written."""
        steps, seconds = self.steps() if steps is None else steps, self.elapsed()
        best, stats = self.counts.best_reward(), frame_stats.latest(self.counts.frames)
        state = checkpoint(self.shared_model, self.optimizer, steps, seconds, best, self.args, frame_stats=stats)
        saved = self.record.save_checkpoint(state, seconds, final=final, retry_in=self.args.save_interval)
        self.record.plot_curve(f"A3C on {self.args.env_name}", seconds, steps)
        return saved

    # ---------------------------------------------------------------- the loop

    def headline(self) -> str:
        resumed = f", resumed at step {self.start_steps:,}" if self.args.resume else ""
        where = f"{self.args.num_processes} workers on {self.args.env_name}"
        line = f"Run directory: {self.record.dir}  ({where}{resumed})"
        return line + (f"\n{note}" if (note := recipes.adapted(self.args)) else "")

    def tick(self) -> None:
        """The sources of events, polled: the pool, for half a second (a cluster polls its machines too)."""
        self.pool.poll(0.5)

    def stop_sources(self) -> None:
        self.pool.stop()

    def supervise(self, processes) -> int:
        """Hand the events to the jobs and tick them until a budget, a signal or a failure; then stop the children,
        save, and return 0, or 1 after a failure or if the final checkpoint could not be written."""
        print(self.headline(), flush=True)
        self.pool.adopt(processes)
        with stop_signals() as signals:
            stopper = jobs.Stopper(self, signals)
            self.jobs.insert(0, stopper)
            while not (reason := stopper.reason()) and stopper.failure is None:
                self.tick()
                for job in self.jobs:
                    job.on_tick()
            self.stop_sources()
            saved = self.save(final=True)
            for job in self.jobs:
                job.on_end()
        if (failure := stopper.failure) is not None:
            where = f"checkpoint saved in {self.record.dir}" if saved else "final checkpoint not written"
            print(f"main.py: {failure.name} died: {failure.why}; other processes stopped, {where}", file=sys.stderr)
            return 1
        if not saved:
            last_good = self.record.last_good_description()
            print(
                f"main.py: error: {reason}, but the final checkpoint could not be written; {last_good}", file=sys.stderr
            )
            return 1
        print(f"{reason}; checkpoint saved in {self.record.dir}", flush=True)
        return 0
