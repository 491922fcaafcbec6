"""A run as the main process supervises it: the shared model and optimizer resumed, budgets, checkpoints,
Ctrl-C, dead children, the status line. And the link each child process (a worker or the test process)
keeps to it: the stop flag, and a queue for what the child tells (games, evaluations, errors)."""

import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections import deque
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path

import torch

from a3c_extras.checkpoints import CheckpointError, checkpoint, load_checkpoint, save_checkpoint
from a3c_extras.cli import complete, fail
from a3c_extras.run_record import ProgressLog, plot_learning_curve, write_config


class WorkerLink:
    """A child's side of the run. Without a stop event or a queue (tests, benchmarks, the course's own
    main.py body) it reports nothing and stops only at max_steps. `make_env(params)` replaces the Atari
    game (the tests' Catch). `counter` is the run's shared step counter (a local one without a run)."""

    def __init__(self, name: str = "worker", stop_event=None, events=None, best=None, make_env=None, counter=None):
        self.name, self.stop_event, self.events, self.best, self.make_env = name, stop_event, events, best, make_env
        self.counter = counter if counter is not None else mp.Value("q", 0, lock=False)
        self.params = None  # the completed params, set by connect()
        self.start_steps = 0  # the run's steps when connect() was called
        self.game_return, self.game_length = {}, {}  # per game of the worker: raw score and length so far
        self.skipped = self.skipped_in_a_row = 0  # non-finite updates

    def report(self, *event) -> None:
        if self.events is not None:
            self.events.put(event)

    def budget_reached(self) -> bool:
        """The run's step budget, params.max_steps (0: none), is spent."""
        max_steps = self.params.max_steps if self.params is not None else 0
        return bool(max_steps and self.counter.value >= max_steps)

    def stop_requested(self) -> bool:
        return bool(self.stop_event is not None and self.stop_event.is_set()) or self.budget_reached()

    def add_steps(self, n: int) -> None:
        lock = self.counter.get_lock() if hasattr(self.counter, "get_lock") else nullcontext()
        with lock:
            self.counter.value += n

    def total_steps(self) -> int:
        return self.counter.value

    def speed(self, start_time: float) -> str:
        """The test process's line after the course's three fields: the run's agent steps and their rate
        since this process started; nothing without a run."""
        if self.events is None:
            return ""
        steps = self.total_steps()
        return f", num steps {steps}, FPS {(steps - self.start_steps) / max(time.time() - start_time, 1e-9):.0f}"

    def wait(self, seconds: float) -> None:
        """Sleep, but wake up when the run stops."""
        if self.stop_event is not None:
            self.stop_event.wait(seconds)
        else:
            time.sleep(seconds)

    def game_step(self, rank: int, reward: float, done: bool, info: dict, game: int = 0) -> None:
        """Count one agent step, and keep the raw (unclipped) score of the worker's game number `game`;
        when that game is over, report it for progress.csv. With --life-loss an episode ends at each
        lost life, the game only when info says so."""
        self.add_steps(1)
        self.game_return[game] = self.game_return.get(game, 0.0) + reward
        self.game_length[game] = self.game_length.get(game, 0) + 1
        if done and info.get("game_over", True):
            self.report("train", rank, self.counter.value, self.game_return.pop(game), self.game_length.pop(game))

    def update(self, rank: int, policy_loss, value_loss, entropy, grad_norm) -> bool:
        """Whether the update may go to the shared model; one whose loss or gradient is not finite is
        skipped and counted, and max_nonfinite of them in a row end the worker."""
        if all(torch.isfinite(torch.as_tensor(x)).all() for x in (policy_loss, value_loss, grad_norm)):
            self.skipped_in_a_row = 0
            return True
        self.skipped += 1
        self.skipped_in_a_row += 1
        self.report("nonfinite", rank, self.skipped)
        if self.skipped_in_a_row >= self.params.max_nonfinite:
            raise FloatingPointError(f"{self.skipped_in_a_row} updates in a row had a non-finite loss or gradient")
        return False

    def evaluation(self, rank: int, num_steps: int, reward: float, length: int, model, params) -> None:
        """After an evaluation episode: report it, and save the weights that earned a new best score."""
        self.report("eval", rank, num_steps, reward, length)
        if self.best is not None and reward > self.best.value:
            self.best.value = reward
            save_checkpoint(Path(params.run_dir) / "best.pt", checkpoint(model, None, num_steps, None, reward, params))


def connect(params, link: WorkerLink | None = None, name: str = "worker"):
    """What train and test do first: params completed with the defaults of every field they lack (a
    learner's own Params has the course's eight), and the link to the run, or one to no run that ends
    this process when its parent ends (the course's main.py body starts the children this way)."""
    params = complete(params)
    if link is None:
        link = WorkerLink(name)
        end_with_parent()
    link.params, link.start_steps = params, link.total_steps()
    return params, link


def end_with_parent() -> None:
    """End this process, from a watcher thread, as soon as the process that started it is gone."""
    parent = os.getppid()

    def watch_parent():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch_parent, daemon=True).start()


def child(link: WorkerLink, target, *args):
    """Body of every child process: Ctrl-C is the main process's business; an exception is reported
    to it in one line; the child ends if the main process disappears."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    end_with_parent()
    try:
        target(*args, link=link)
    except Exception as error:
        last = traceback.extract_tb(error.__traceback__)[-1]
        link.report("error", link.name, f"{type(error).__name__}: {error} ({Path(last.filename).name}:{last.lineno})")
        link.events.close()
        link.events.join_thread()
        sys.exit(1)


class Child:
    """A picklable process target: child(link, target, *args) for the arguments mp.Process passes."""

    def __init__(self, link: WorkerLink, target):
        self.link, self.target = link, target

    def __call__(self, *args):
        child(self.link, self.target, *args)


def describe_exit(exitcode: int) -> str:
    if exitcode < 0:
        return f"killed by signal {signal.Signals(-exitcode).name}"
    return f"exited with status {exitcode}"


def drain_queue(events, handle, timeout: float) -> None:
    """Hand every event waiting in the queue to `handle`, waiting up to `timeout` for the first."""
    try:
        handle(events.get(timeout=timeout))
        while True:
            handle(events.get_nowait())
    except queue.Empty:
        pass


def first_dead(processes: dict, errors: dict, budget_reached: bool):
    """The first child that ended on its own, with why; workers end cleanly only at the step budget."""
    for name, p in processes.items():
        if p.exitcode is not None and (p.exitcode != 0 or not budget_reached):
            return name, errors.get(name) or describe_exit(p.exitcode)
    return None


def stop_processes(processes, stop_event, drain) -> None:
    """Ask the children to stop, give them 5 s, then kill what is left."""
    stop_event.set()
    deadline = time.time() + 5
    # Keep reading the queue meanwhile: a child cannot exit before what it put there is read.
    while time.time() < deadline and any(p.is_alive() for p in processes):
        drain(timeout=0.1)
    for p in processes:
        if p.is_alive():
            p.kill()
            p.join()


def load_shared(shared_model, optimizer, model_state: dict, optimizer_state: dict | None) -> None:
    """Saved weights and optimizer statistics into the shared model and optimizer, left in shared memory."""
    shared_model.load_state_dict(model_state)  # into the shared tensors
    if optimizer is not None and optimizer_state:
        optimizer.load_state_dict(optimizer_state)
        optimizer.share_memory()  # load_state_dict made new tensors of the statistics


class Run:
    """The main process's side of a run. Created after the shared model and optimizer, before the
    processes: with --resume it loads the checkpoint into them."""

    def __init__(self, args, shared_model, optimizer, ctx=mp):
        args = complete(args)
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
            best = data.get("best_reward")
        self.counter = ctx.Value("q", self.counter_start)
        # The best evaluation so far: the test process raises it and writes best.pt itself, so the
        # weights never travel through the event queue.
        self.best = ctx.Value("d", float("-inf") if best is None else best)
        self.stop_event = ctx.Event()
        self.events = ctx.Queue()
        self.names = []
        self.run_dir = Path(args.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config_name = "config.json" if not self.resumed else f"config-resume-{datetime.now():%Y%m%d-%H%M%S}.json"
        write_config(self.run_dir / config_name, args,
                     {"resumed_from": args.resume, "resumed_at_steps": self.counter_start})
        self.log = ProgressLog(self.run_dir / "progress.csv")
        self.recent_returns = deque(maxlen=100)
        self.last_eval = None
        self.nonfinite = {}
        self.errors = {}
        # Ctrl-C and SIGTERM ask for a clean stop: supervise notices, saves and returns 0.
        self.stop_requested = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: self.stop_requested.append(signal.Signals(signum).name))
        self.start_time = time.time()
        print(f"Run directory: {self.run_dir}  ({self.workers_description()} on {args.env_name}"
              f"{', resumed at step ' + format(self.counter_start, ',') if self.resumed else ''})", flush=True)

    def workers_description(self) -> str:
        return f"{self.args.num_processes} workers"

    def link(self, name: str) -> WorkerLink:
        """The link of the next child process started (the test process gets the best score)."""
        self.names.append(name)
        return WorkerLink(name, self.stop_event, self.events, self.best if name == "test" else None,
                          counter=self.counter)

    def child(self, target) -> "Child":
        """The target of the next child process: the course's train or test, run under the link."""
        workers = sum(name != "test" for name in self.names)
        return Child(self.link("test" if target.__name__ == "test" else f"worker {workers}"), target)

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.start_time

    def handle(self, event):
        kind = event[0]
        if kind == "train":
            _, rank, steps, game_return, length = event
            self.log.write("train", self.elapsed(), steps, rank, game_return, length)
            self.recent_returns.append(game_return)
        elif kind == "eval":
            _, _, steps, reward, length = event
            self.log.write("eval", self.elapsed(), steps, None, reward, length)
            self.last_eval = reward
        elif kind == "nonfinite":
            self.nonfinite[event[1]] = event[2]
        elif kind == "error":
            self.errors[event[1]] = event[2]

    def drain(self, timeout: float):
        drain_queue(self.events, self.handle, timeout)

    def best_reward(self):
        return None if self.best.value == float("-inf") else self.best.value

    def save_all(self, steps: int | None = None):
        """The checkpoint (of `steps` agent steps, by default the counter's) and the learning curve."""
        steps = self.counter.value if steps is None else steps
        save_checkpoint(self.run_dir / "checkpoint.pt", checkpoint(
            self.shared_model, self.optimizer, steps, self.elapsed(), self.best_reward(), self.args))
        plot_learning_curve(self.run_dir / "progress.csv", self.run_dir / "learning_curve.png",
                            f"A3C on {self.args.env_name}")

    def status_line(self) -> str:
        steps = self.counter.value
        rate = (steps - self.counter_start) / max(time.time() - self.start_time, 1e-9)
        parts = [f"steps {steps:,}", f"{rate:,.0f} steps/s"]
        if self.recent_returns:
            parts.append(f"train return (last {len(self.recent_returns)}) "
                         f"{sum(self.recent_returns) / len(self.recent_returns):.1f}")
        parts.append(f"last eval {self.last_eval if self.last_eval is not None else '-'}")
        parts.append(f"best {self.best_reward() if self.best_reward() is not None else '-'}")
        if self.nonfinite:
            parts.append(f"skipped non-finite updates {sum(self.nonfinite.values())}")
        left = []
        if self.args.max_steps:
            left.append(f"{max(self.args.max_steps - steps, 0):,} steps")
        if self.args.max_time:
            left.append(f"{max(self.args.max_time - (time.time() - self.start_time), 0):,.0f} s")
        if left:
            parts.append("left " + ", ".join(left))
        return " | ".join(parts)

    def dead_process(self):
        """The first child that ended on its own, with why."""
        budget_reached = bool(self.args.max_steps and self.counter.value >= self.args.max_steps)
        return first_dead(self.processes, self.errors, budget_reached)

    def stop_children(self):
        stop_processes(self.processes.values(), self.stop_event, self.drain)

    def keep_up(self):
        """Called every half second of the run: nothing on one machine (a cluster polls its machines here)."""

    def supervise(self, processes) -> int:
        """Until a budget, Ctrl-C or a dead child: record, checkpoint, print the status. Then stop every
        child, save and return the exit status (0, or 1 if a child died)."""
        self.processes = dict(zip(self.names, processes))
        args = self.args
        last_save = last_status = time.time()
        failure, reason = None, None
        while True:
            self.drain(timeout=0.5)
            self.keep_up()
            now = time.time()
            if self.stop_requested:
                reason = f"stopped by {self.stop_requested[0]}"
            elif args.max_steps and self.counter.value >= args.max_steps:
                reason = f"step budget of {args.max_steps:,} reached"
            elif args.max_time and now - self.start_time >= args.max_time:
                reason = f"time budget of {args.max_time:g} s reached"
            else:
                failure = self.dead_process()
            if reason or failure:
                break
            if now - last_save >= args.save_interval:
                self.save_all()
                last_save = now
            if now - last_status >= args.status_interval:
                print(self.status_line(), flush=True)
                last_status = now

        self.stop_children()
        if failure is None:
            failure = self.dead_process() if not reason else None
        self.drain(timeout=0.1)
        self.save_all()
        self.log.close()
        print(self.status_line(), flush=True)
        if failure:
            name, why = failure
            print(f"main.py: {name} died: {why}; other processes stopped, checkpoint saved in {self.run_dir}",
                  file=sys.stderr, flush=True)
            return 1
        print(f"{reason}; checkpoint saved in {self.run_dir}", flush=True)
        return 0
