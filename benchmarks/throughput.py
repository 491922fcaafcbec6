"""Throughput of A3C training on this machine, against the emulator's ceiling and the classic loop.

    python benchmarks/throughput.py                      # workers = CPU count, rollouts of 20 steps
    python benchmarks/throughput.py --workers 2 --repeats 3
    python benchmarks/throughput.py --workers 2 --envs-per-worker 1 2 4 8 16   # a table over K
    python benchmarks/throughput.py --workers 2 --envs-per-worker 8 --profile   # where the time goes
    python benchmarks/throughput.py --memory-minutes 10  # resident memory of the workers over 10 min
    python benchmarks/throughput.py --workers 2 --frame-size 80 --lstm-size 512   # the opt-in sizes

The measurements, each with N processes started the way main.py starts its workers (torch
multiprocessing, the shared step count and stop flag of a run), timed from the shared count
after a warm-up:

  ceiling  the same Atari env with the same frame processing, stepped with random actions:
           what the emulator alone allows, the upper bound for any training loop;
  train    the project's training (train.train with --rollout fast) on a shared ActorCritic
           and SharedAdam, once for each K of --envs-per-worker (games per worker);
  classic  the same with --rollout classic, the course's loop.

--frame-size and --lstm-size measure all three with the network's opt-in sizes (main.py's flags): the
ceiling's frames are then of that size too.

With --profile each train measurement also times the parts of every worker's loop and prints them per
agent step: env (the emulator: ALE's step and reset), frames (the frames and their normalisation),
wrappers (the rest of a game's step: gymnasium's wrappers, the run's bookkeeping), forward (acting on the
frames, sampling the actions), backward (the losses, the backward pass, clipping), optimizer (the shared
Adam step), sync (copying the shared weights into the local model) and other (the rest of the wall time).

The last line is machine-readable, for the K with the highest training throughput:
  envs_per_worker=... train_steps_per_s=... classic_steps_per_s=... ceiling_steps_per_s=...
  speedup_vs_classic=... fraction_of_ceiling=...
With --repeats R each figure is the median of R rounds (the spread is printed above it).
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as main.py: one intra-op thread per process
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project's modules

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from ale_py.env import AtariEnv  # noqa: E402

from a3c_extras import fast_frames, fast_worker  # noqa: E402
from a3c_extras.atari import options  # noqa: E402
from a3c_extras.cli import add_size_arguments, fail, number, read_command_line  # noqa: E402
from a3c_extras.fast_rollout import Rollout  # noqa: E402
from a3c_extras.links import SharedCounts, WorkerLink  # noqa: E402
from a3c_extras.shared import shared_model_and_optimizer  # noqa: E402
from a3c_extras.sizes import COURSE_FRAME_SIZE  # noqa: E402
from envs import create_atari_env  # noqa: E402
from main import Params  # noqa: E402
from model import ActorCritic  # noqa: E402
from my_optim import SharedAdam  # noqa: E402
from train import train  # noqa: E402

ENV_NAME = "BreakoutDeterministic-v4"
COUNT_EVERY = 20  # ceiling processes add to the shared count in chunks, as workers do per rollout
TARGETS = {"speedup_vs_classic": 4.0, "fraction_of_ceiling": 0.62}  # at K = 16 (docs/speed.md)
# --profile: the functions timed in a worker's loop, by what they do; a game's step is timed whole and
# printed less the emulator and the frames inside it ("wrappers")
TIMED = {
    "env": [(AtariEnv, "step"), (AtariEnv, "reset")],
    "frames": [(fast_frames.Rescale, "observation"), (fast_frames.Normalized, "observation")],
    "game": [(fast_worker.Game, "step")],
    "forward": [(Rollout, "act"), (fast_worker, "sample_actions")],
    "backward": [(fast_worker, "batch_loss"), (torch.Tensor, "backward"), (torch.nn.utils, "clip_grad_norm_")],
    "optimizer": [(fast_worker, "fused_adam_step"), (fast_worker, "set_learning_rate")],
    "sync": [(fast_worker, "copy_weights")],
}
PARTS = ["env", "frames", "wrappers", "forward", "backward", "optimizer", "sync"]


def parts_of(timed: dict) -> dict:
    """The printed parts from the timed functions' seconds: a game's step less what is timed inside it."""
    parts = {part: timed[part] for part in PARTS if part in timed}
    parts["wrappers"] = timed["game"] - timed["env"] - timed["frames"]
    return {part: parts[part] for part in PARTS}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="A3C training throughput on Breakout against the emulator's ceiling")
    p.add_argument(
        "--workers",
        type=number(int, low=1),
        default=os.cpu_count() or 1,
        help="processes in each measurement (default: the CPU count)",
    )
    p.add_argument("--num-steps", type=number(int, low=1), default=20, help="rollout length (default: 20)")
    p.add_argument(
        "--envs-per-worker",
        type=number(int, low=1),
        nargs="+",
        default=[1],
        metavar="K",
        help="games per training worker; several values give one train measurement each (default: 1)",
    )
    add_size_arguments(p)  # main.py's --frame-size and --lstm-size
    p.add_argument(
        "--profile", action="store_true", help="also time the parts of the training workers' loop, per agent step"
    )
    p.add_argument("--warmup", type=number(float, low=0), default=10, help="seconds run before measuring (default: 10)")
    p.add_argument(
        "--measure",
        type=number(float, above=0),
        default=40,
        help="seconds measured for each of ceiling, train and classic (default: 40)",
    )
    p.add_argument(
        "--repeats",
        type=number(int, low=1),
        default=1,
        help="rounds of the three measurements; figures are medians (default: 1)",
    )
    p.add_argument(
        "--memory-minutes",
        type=number(float, above=0),
        default=None,
        metavar="M",
        help="instead: run the training workers M minutes and report how their resident memory grows",
    )
    p.add_argument(
        "--memory-warmup",
        type=number(float, low=0),
        default=60,
        help="with --memory-minutes: seconds before the baseline sample (default: 60)",
    )
    p.add_argument(
        "--sample-interval",
        type=number(float, above=0),
        default=5,
        help="with --memory-minutes: seconds between memory samples (default: 5)",
    )
    p.error = lambda message: fail(f"{p.prog}: error: {message}")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    if args.memory_minutes is not None and args.memory_warmup >= args.memory_minutes * 60:
        fail(
            f"throughput.py: error: --memory-warmup ({args.memory_warmup:g} s) must be shorter than "
            f"--memory-minutes ({args.memory_minutes:g} min)"
        )
    return args


# ---------------------------------------------------------------- the processes measured


def random_player(rank, shared, frame_size: int = COURSE_FRAME_SIZE):
    """The ceiling: step the training environment with uniformly random actions."""
    env = create_atari_env(ENV_NAME, link=options(frame_size=frame_size))
    env.reset(seed=rank)
    rng = np.random.default_rng(rank)
    num_actions = env.action_space.n
    steps = 0
    while not shared.stop.value:
        _, _, terminated, truncated, _ = env.step(int(rng.integers(num_actions)))
        if terminated or truncated:
            env.reset()
        steps += 1
        if steps == COUNT_EVERY:
            shared.steps[rank] += steps
            steps = 0


def profiled_train(seconds, *train_args, link):
    """train.train with the functions of TIMED timed; adds the seconds spent in each to `seconds` (a
    shared array, one entry per key of TIMED) when the worker stops."""
    spent = dict.fromkeys(TIMED, 0.0)
    in_game = [False]  # the emulator and the frames count inside a game's step only (not the set-up's resets)

    def timed(part, function):
        def run(*args, **kwargs):
            if part in ("env", "frames") and not in_game[0]:
                return function(*args, **kwargs)
            in_game[0] |= part == "game"
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[part] += time.perf_counter() - start
                in_game[0] &= part != "game"

        return run

    for part, functions in TIMED.items():
        for owner, name in functions:
            setattr(owner, name, timed(part, getattr(owner, name)))
    try:
        train(*train_args, link=link)
    finally:
        with seconds.get_lock():
            for index, part in enumerate(TIMED):
                seconds[index] += spent[part]


def start_processes(
    kind: str, workers: int, num_steps: int, envs_per_worker: int = 1, profile=None, sizes: tuple = (42, 256)
):
    """Start `workers` processes of one kind; returns (processes, shared counts). With `profile`
    (a shared array) the training workers time the parts of their loop into it. `sizes`: the frame size
    and the LSTM size (--frame-size, --lstm-size)."""
    shared = SharedCounts(mp, workers)
    frame_size, lstm_size = sizes
    if kind == "ceiling":
        targets = [(random_player, (rank, shared, frame_size), {}) for rank in range(workers)]
    else:
        args = read_command_line(
            Params(),
            [
                "--num-processes",
                str(workers),
                "--num-steps",
                str(num_steps),
                "--rollout",
                "fast" if kind == "train" else "classic",
                "--envs-per-worker",
                str(envs_per_worker),
                "--frame-size",
                str(frame_size),
                "--lstm-size",
                str(lstm_size),
            ],
        )
        torch.manual_seed(args.seed)
        env = create_atari_env(args.env_name, link=options(frame_size=frame_size))
        shared_model, optimizer = shared_model_and_optimizer(args, env, ActorCritic, SharedAdam)
        env.close()
        target, extra = (train, ()) if profile is None else (profiled_train, (profile,))
        targets = [
            (target, (*extra, rank, args, shared_model, optimizer), {"link": WorkerLink(counts=shared, slot=rank)})
            for rank in range(workers)
        ]
    processes = []
    for target, args, kwargs in targets:
        p = mp.Process(target=target, args=args, kwargs=kwargs, daemon=True)
        p.start()
        processes.append(p)
    return processes, shared


def stop_processes(processes, shared):
    shared.stop.value = 1
    for p in processes:
        p.join(timeout=10)
    for p in processes:
        if p.is_alive():
            p.kill()
            p.join()


def check_alive(processes, kind: str):
    for p in processes:
        if p.exitcode is not None:
            raise RuntimeError(f"a {kind} process ended early ({p.exitcode=}); run main.py to see its error")


class MemorySampler:
    """Resident memory (RSS) of each process, sampled on demand."""

    def __init__(self, processes):
        self.procs = [psutil.Process(p.pid) for p in processes]
        self.samples = [[] for _ in processes]  # per process: (time, rss bytes)

    def sample(self):
        now = time.time()
        for proc, samples in zip(self.procs, self.samples):
            try:
                samples.append((now, proc.memory_info().rss))
            except psutil.NoSuchProcess:
                pass

    def peak_mb(self) -> float:
        return max((rss for samples in self.samples for _, rss in samples), default=0) / 2**20


def sleep_sampling(seconds: float, sampler: MemorySampler, processes, kind: str, interval: float = 1.0):
    end = time.time() + seconds
    while True:
        sampler.sample()
        check_alive(processes, kind)
        left = end - time.time()
        if left <= 0:
            return
        time.sleep(min(interval, left))


def measure(kind: str, args, envs_per_worker: int = 1) -> tuple[float, float, dict | None]:
    """Agent steps per second (all processes together), the peak RSS of one process (MB) and, with
    --profile, the microseconds per agent step of each part of the loop (warm-up included)."""
    profile = mp.Array("d", len(TIMED)) if args.profile and kind == "train" else None
    sizes = (args.frame_size, args.lstm_size)
    processes, shared = start_processes(kind, args.workers, args.num_steps, envs_per_worker, profile, sizes)
    try:
        sampler = MemorySampler(processes)
        sleep_sampling(args.warmup, sampler, processes, kind)
        start_steps, start = shared.total(), time.perf_counter()
        sleep_sampling(args.measure, sampler, processes, kind)
        steps, elapsed = shared.total() - start_steps, time.perf_counter() - start
    finally:
        stop_processes(processes, shared)
    parts = None
    if profile is not None:  # per agent step of one worker: the seconds of all workers over all their steps
        parts = parts_of({part: profile[index] / shared.total() * 1e6 for index, part in enumerate(TIMED)})
    return steps / elapsed, sampler.peak_mb(), parts


# ---------------------------------------------------------------- the two modes


def run_throughput(args) -> None:
    kinds = ["ceiling", "classic"] + [f"train K={k}" for k in args.envs_per_worker]
    rates = {kind: [] for kind in kinds}
    peaks = {kind: [] for kind in kinds}
    parts = {}
    print(
        f"{args.workers} processes on {os.cpu_count()} CPUs, {ENV_NAME}, rollouts of {args.num_steps} steps, "
        f"{args.frame_size}x{args.frame_size} frames, LSTM {args.lstm_size}, "
        f"warm-up {args.warmup:g} s, measured {args.measure:g} s each, {args.repeats} round(s); "
        f"K = games per training worker",
        flush=True,
    )
    print(f"{'round':>5}  {'run':11} {'steps/s':>9} {'per worker':>11} {'peak RSS each':>16}", flush=True)
    for round_ in range(1, args.repeats + 1):
        for kind in kinds:
            envs_per_worker = int(kind.split("=")[1]) if kind.startswith("train") else 1
            rate, peak, kind_parts = measure(kind.split()[0], args, envs_per_worker)
            rates[kind].append(rate)
            peaks[kind].append(peak)
            if kind_parts:
                parts.setdefault(kind, []).append(kind_parts)
            print(f"{round_:>5}  {kind:11} {rate:9.0f} {rate / args.workers:11.0f} {peak:13.0f} MB", flush=True)

    median = {kind: statistics.median(rates[kind]) for kind in kinds}
    print()
    print(
        f"{'run':11} {'median steps/s':>15} {'min..max':>14} {'spread':>7} {'x classic':>10} {'of ceiling':>11} "
        f"{'peak RSS each':>14}"
    )
    for kind in kinds:
        low, high = min(rates[kind]), max(rates[kind])
        print(
            f"{kind:11} {median[kind]:15.0f} {f'{low:.0f}..{high:.0f}':>14} "
            f"{(high - low) / median[kind] * 100:6.1f}% {median[kind] / median['classic']:10.2f} "
            f"{median[kind] / median['ceiling']:11.2f} {max(peaks[kind]):11.0f} MB"
        )
    if parts:
        print()
        print("microseconds per agent step of one worker (medians over rounds), against its wall time:")
        print(f"{'run':11} " + " ".join(f"{part:>9}" for part in PARTS) + f" {'other':>9} {'wall':>9}")
        for kind, rounds in parts.items():
            per_part = {part: statistics.median(r[part] for r in rounds) for part in PARTS}
            wall = args.workers / median[kind] * 1e6
            print(
                f"{kind:11} "
                + " ".join(f"{per_part[part]:9.0f}" for part in PARTS)
                + f" {wall - sum(per_part.values()):9.0f} {wall:9.0f}"
            )
    best = max(kinds[2:], key=median.get)
    figures = {
        "speedup_vs_classic": median[best] / median["classic"],
        "fraction_of_ceiling": median[best] / median["ceiling"],
    }
    verdict = ", ".join(
        f"{name} {'met' if figures[name] >= target else 'missed'} (target {target:g})"
        for name, target in TARGETS.items()
    )
    print(f"best: {best}; {verdict}")
    print(
        f"envs_per_worker={best.split('=')[1]} train_steps_per_s={median[best]:.0f} "
        f"classic_steps_per_s={median['classic']:.0f} ceiling_steps_per_s={median['ceiling']:.0f} "
        f"speedup_vs_classic={figures['speedup_vs_classic']:.2f} "
        f"fraction_of_ceiling={figures['fraction_of_ceiling']:.2f}",
        flush=True,
    )


def run_memory(args) -> None:
    """Resident memory of each training worker over a long run: the baseline is the first sample
    after the warm-up; growth = (last sample - baseline) / baseline."""
    total = args.memory_minutes * 60
    envs_per_worker = args.envs_per_worker[0]
    print(
        f"{args.workers} training workers of {envs_per_worker} game(s) for {args.memory_minutes:g} min, RSS "
        f"sampled every {args.sample_interval:g} s, baseline after {args.memory_warmup:g} s",
        flush=True,
    )
    sizes = (args.frame_size, args.lstm_size)
    processes, shared = start_processes("train", args.workers, args.num_steps, envs_per_worker, sizes=sizes)
    start = time.time()
    try:
        sampler = MemorySampler(processes)
        next_report = start + 60
        while time.time() - start < total:
            sampler.sample()
            check_alive(processes, "train")
            if time.time() >= next_report:
                rss = ", ".join(f"{samples[-1][1] / 2**20:.1f}" for samples in sampler.samples)
                print(
                    f"  {time.time() - start:5.0f} s  {shared.total():>9,} steps  RSS per worker (MB): {rss}",
                    flush=True,
                )
                next_report += 60
            time.sleep(min(args.sample_interval, max(total - (time.time() - start), 0)))
        sampler.sample()
        steps = shared.total()
    finally:
        stop_processes(processes, shared)

    print(f"{'worker':>6} {'baseline MB':>12} {'last MB':>8} {'peak MB':>8} {'growth':>7} {'samples':>8}")
    growths, peaks = [], []
    for rank, samples in enumerate(sampler.samples):
        after = [rss for t, rss in samples if t - start >= args.memory_warmup]
        if len(after) < 2:
            fail("throughput.py: error: too few samples after the warm-up; lengthen --memory-minutes")
        base, last, peak = after[0], after[-1], max(after)
        growth = (last - base) / base * 100
        growths.append(growth)
        peaks.append(peak / 2**20)
        print(f"{rank:>6} {base / 2**20:12.1f} {last / 2**20:8.1f} {peak / 2**20:8.1f} {growth:6.2f}% {len(after):8}")
    worst = max(growths)
    print(f"{steps:,} agent steps in {total / 60:g} min ({steps / total:.0f} steps/s)")
    print(
        f"memory_growth_pct_max={worst:.2f} peak_rss_mb_max={max(peaks):.1f} "
        f"flat={'yes' if worst < 5 else 'no'} (limit: growth under 5% after warm-up)",
        flush=True,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_minutes is not None:
        run_memory(args)
    else:
        run_throughput(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
