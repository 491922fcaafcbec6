"""A3C for Atari Breakout: one shared model and optimizer, N Hogwild training workers and one test process.

    python main.py                       # Breakout, all CPU cores, until Ctrl-C
    python main.py --max-steps 5000000   # stop by itself after 5M agent steps
    python main.py --resume runs/<run>   # carry on from the last checkpoint
"""

import argparse
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections import deque
from datetime import datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one intra-op thread per process, set before torch loads

import torch  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

import my_optim  # noqa: E402
from checkpoint import CheckpointError, checkpoint_path, load_checkpoint, save_checkpoint  # noqa: E402
from envs import UnknownEnvError, create_atari_env, resolve_env_id  # noqa: E402
from model import ActorCritic  # noqa: E402
from progress import ProgressLog, plot_learning_curve, write_config  # noqa: E402
from test import test  # noqa: E402
from train import train  # noqa: E402

# ---------------------------------------------------------------- arguments, declared in one place

def number(kind, low=None, above=None):
    """An argparse type: `kind` parsed, then checked against a bound, with a one-line message."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got '{text}'")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f"must be greater than {above}, got {text}")
        return value

    return parse


def env_id(text):
    try:
        resolve_env_id(text)
    except UnknownEnvError as error:
        raise argparse.ArgumentTypeError(str(error))
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="A3C (asynchronous advantage actor-critic) for Atari Breakout")
    # The course's hyper-parameters (defaults of the reference implementation).
    p.add_argument("--lr", type=number(float, above=0), default=0.0001, help="learning rate (default: 0.0001)")
    p.add_argument("--gamma", type=number(float, low=0), default=0.99, help="discount factor (default: 0.99)")
    p.add_argument("--gae-lambda", type=number(float, low=0), default=1.00,
                   help="lambda of generalised advantage estimation, 'tau' in the course (default: 1.00)")
    p.add_argument("--entropy-coef", type=number(float, low=0), default=0.01, help="entropy bonus (default: 0.01)")
    p.add_argument("--value-loss-coef", type=number(float, low=0), default=0.5,
                   help="value loss weight, on top of the 0.5 inside the loss (default: 0.5)")
    p.add_argument("--max-grad-norm", type=number(float, above=0), default=50, help="gradient clipping (default: 50)")
    p.add_argument("--seed", type=int, default=1, help="random seed; worker k uses seed + k (default: 1)")
    p.add_argument("--num-processes", type=number(int, low=1), default=os.cpu_count() or 1,
                   help="training workers (default: the CPU count)")
    p.add_argument("--num-steps", type=number(int, low=1), default=20, help="rollout length (default: 20)")
    p.add_argument("--max-episode-length", type=number(int, low=1), default=1000000,
                   help="agent steps before an episode is cut (default: 1000000)")
    p.add_argument("--env-name", type=env_id, default="BreakoutDeterministic-v4",
                   help="environment (default: BreakoutDeterministic-v4, i.e. ALE/Breakout-v5 without sticky actions)")
    p.add_argument("--no-shared", action="store_true", help="plain Adam per worker instead of SharedAdam")
    # Runs that end, resume and leave a record.
    p.add_argument("--max-steps", type=number(int, low=0), default=0,
                   help="stop after this many agent steps in total, over all workers and sittings (0: no limit)")
    p.add_argument("--max-time", type=number(float, low=0), default=0,
                   help="stop after this many seconds of this sitting (0: no limit)")
    p.add_argument("--run-dir", default=None, help="where to keep the run (default: runs/<env>-<date-time>)")
    p.add_argument("--resume", default=None, metavar="PATH", help="checkpoint or run directory to continue")
    p.add_argument("--save-interval", type=number(float, above=0), default=300,
                   help="seconds between checkpoints (default: 300)")
    p.add_argument("--eval-interval", type=number(float, low=0), default=60,
                   help="seconds the test process waits between episodes (default: 60)")
    p.add_argument("--status-interval", type=number(float, above=0), default=30,
                   help="seconds between status lines (default: 30)")
    p.add_argument("--max-nonfinite", type=number(int, low=1), default=100,
                   help="stop when this many updates in a row have a non-finite loss (default: 100)")
    # Videos of the test process.
    p.add_argument("--record-every", type=number(int, low=0), default=10,
                   help="record the first evaluation and then every N-th to <run-dir>/videos (0: never)")
    p.add_argument("--overlay", action="store_true", help="videos show the agent's input, policy and value")
    # Speed and opt-in departures from the course.
    p.add_argument("--rollout", choices=["fast", "classic"], default="fast",
                   help="fast: act without autograd, one batched forward per update; classic: the course's loop")
    p.add_argument("--life-loss", action="store_true", help="departure: a lost life ends the training episode")
    p.add_argument("--fire-reset", action="store_true", help="departure: press FIRE at each start and lost life")
    p.error = lambda message: fail(f"{p.prog}: error: {message}", 2)
    return p


def parse_args(argv=None):
    """Parse the command line; with --resume, the saved run's arguments are the defaults."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume:
        saved = load_checkpoint(args.resume)["args"]
        keep = {"resume", "run_dir", "max_steps", "max_time"}  # these belong to this sitting
        parser.set_defaults(**{k: v for k, v in saved.items() if k not in keep and hasattr(args, k)})
        args = parser.parse_args(argv)
        if args.run_dir is None:  # carry on in the same run directory
            args.run_dir = str(checkpoint_path(args.resume).parent)
    if args.run_dir is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        args.run_dir = str(Path("runs") / f"{args.env_name.replace('/', '-')}-{stamp}")
    return args


def fail(message: str, status: int):
    print(message, file=sys.stderr, flush=True)
    sys.exit(status)


# ---------------------------------------------------------------- processes

def run_process(name, target, stop_event, events, *args, **kwargs):
    """Body of every child process: Ctrl-C is the main process's business; an exception is reported
    to it in one line; the child ends if the main process disappears."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    parent = os.getppid()

    def watch_parent():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch_parent, daemon=True).start()
    try:
        target(*args, stop_event=stop_event, events=events, **kwargs)
    except Exception as error:
        last = traceback.extract_tb(error.__traceback__)[-1]
        events.put(("error", name, f"{type(error).__name__}: {error} ({Path(last.filename).name}:{last.lineno})"))
        events.close()
        events.join_thread()
        sys.exit(1)


def describe_exit(exitcode: int) -> str:
    if exitcode < 0:
        return f"killed by signal {signal.Signals(-exitcode).name}"
    return f"exited with status {exitcode}"


class Run:
    """The main process's side of a run: the shared model and optimizer, the record, the budgets."""

    def __init__(self, args):
        self.args = args
        env = create_atari_env(args.env_name)
        self.num_actions = env.action_space.n
        env.close()
        resume_data = load_checkpoint(args.resume, self.num_actions) if args.resume else None
        self.resumed = resume_data is not None
        # The shared model and optimizer (course: shared_model.share_memory(), SharedAdam).
        self.shared_model = ActorCritic(1, self.num_actions)
        self.optimizer = None
        if not args.no_shared:
            self.optimizer = my_optim.SharedAdam(self.shared_model.parameters(), lr=args.lr)
        self.counter_start, self.elapsed_before, best = 0, 0.0, None
        if resume_data is not None:
            self.shared_model.load_state_dict(resume_data["model"])
            if self.optimizer is not None and resume_data.get("optimizer"):
                self.optimizer.load_state_dict(resume_data["optimizer"])
            self.counter_start = resume_data["counter"]
            self.elapsed_before = resume_data.get("elapsed") or 0.0
            best = resume_data.get("best_reward")
        self.shared_model.share_memory()
        if self.optimizer is not None:
            self.optimizer.share_memory()
        self.counter = mp.Value("q", self.counter_start)
        # The best evaluation so far: the test process raises it and writes best.pt itself, so the
        # weights never travel through the event queue.
        self.best = mp.Value("d", float("-inf") if best is None else best)
        self.lock = mp.Lock()
        self.stop_event = mp.Event()
        self.events = mp.Queue()
        self.start_time = time.time()
        self.run_dir = Path(args.run_dir)
        self.log = ProgressLog(self.run_dir / "progress.csv")
        self.recent_returns = deque(maxlen=100)
        self.last_eval = None
        self.nonfinite = {}
        self.errors = {}

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.start_time

    def start(self):
        self.processes = {}
        names = ["test"] + [f"worker {rank}" for rank in range(self.args.num_processes)]
        for rank, name in enumerate(names):
            if name == "test":
                target, rest = test, (self.args.num_processes, self.args, self.shared_model, self.counter)
                extra = {"best": self.best}
            else:
                target = train
                rest = (rank - 1, self.args, self.shared_model, self.counter, self.lock, self.optimizer)
                extra = {}
            p = mp.Process(target=run_process, args=(name, target, self.stop_event, self.events, *rest),
                           kwargs=extra, name=name, daemon=True)
            p.start()
            self.processes[name] = p

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
        try:
            self.handle(self.events.get(timeout=timeout))
            while True:
                self.handle(self.events.get_nowait())
        except queue.Empty:
            pass

    def best_reward(self):
        return None if self.best.value == float("-inf") else self.best.value

    def save(self):
        save_checkpoint(self.run_dir / "checkpoint.pt", {
            "model": self.shared_model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "counter": self.counter.value,
            "elapsed": self.elapsed(),
            "best_reward": self.best_reward(),
            "args": vars(self.args),
        })

    def save_all(self):
        self.save()
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
        """The first child that ended on its own, with why; workers end cleanly only at the step budget."""
        budget_reached = self.args.max_steps and self.counter.value >= self.args.max_steps
        for name, p in self.processes.items():
            if p.exitcode is not None and (p.exitcode != 0 or not budget_reached):
                return name, self.errors.get(name) or describe_exit(p.exitcode)
        return None

    def stop_children(self):
        self.stop_event.set()
        deadline = time.time() + 5
        # Keep reading the queue meanwhile: a child cannot exit before what it put there is read.
        while time.time() < deadline and any(p.is_alive() for p in self.processes.values()):
            self.drain(timeout=0.1)
        for p in self.processes.values():
            if p.is_alive():
                p.kill()
                p.join()


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        torch.manual_seed(args.seed)
        Path(args.run_dir).mkdir(parents=True, exist_ok=True)
        run = Run(args)
    except CheckpointError as error:
        fail(f"main.py: error: {error}", 2)
    run_dir = run.run_dir
    config_name = "config.json" if not run.resumed else f"config-resume-{datetime.now():%Y%m%d-%H%M%S}.json"
    write_config(run_dir / config_name, args, {"resumed_from": args.resume, "resumed_at_steps": run.counter_start})
    print(f"Run directory: {run_dir}  ({args.num_processes} workers on {args.env_name}"
          f"{', resumed at step ' + format(run.counter_start, ',') if run.resumed else ''})", flush=True)

    # Ctrl-C and SIGTERM ask for a clean stop: the loop below notices, saves and exits 0.
    stop_requested = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop_requested.append(signal.Signals(signum).name))

    run.start()
    last_save = last_status = time.time()
    failure, reason = None, None
    while True:
        run.drain(timeout=0.5)
        now = time.time()
        if stop_requested:
            reason = f"stopped by {stop_requested[0]}"
        elif args.max_steps and run.counter.value >= args.max_steps:
            reason = f"step budget of {args.max_steps:,} reached"
        elif args.max_time and now - run.start_time >= args.max_time:
            reason = f"time budget of {args.max_time:g} s reached"
        else:
            failure = run.dead_process()
        if reason or failure:
            break
        if now - last_save >= args.save_interval:
            run.save_all()
            last_save = now
        if now - last_status >= args.status_interval:
            print(run.status_line(), flush=True)
            last_status = now

    run.stop_children()
    if failure is None:
        failure = run.dead_process() if not reason else None
    run.drain(timeout=0.1)
    run.save_all()
    run.log.close()
    print(run.status_line(), flush=True)
    if failure:
        name, why = failure
        print(f"main.py: {name} died: {why}; other processes stopped, checkpoint saved in {run_dir}",
              file=sys.stderr, flush=True)
        return 1
    print(f"{reason}; checkpoint saved in {run_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
