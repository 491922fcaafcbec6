"""A soak run: main.py trains for a long while as a user runs it, and a worker is killed (SIGKILL) at a regular
interval, the two workers in turn. It prints the steps/s before and after each kill, and the resident memory and open
file descriptors of the main process at the start and at the end (a leak of either would grow with each restart).

    python benchmarks/soak.py                                   # 30 min, 2 workers x 16 games, a kill every 2 min
    python benchmarks/soak.py --minutes 3 --kill-every 60       # a short check
    python benchmarks/soak.py --resume training/breakout        # soak a real run: its next sitting

Any further flag goes to main.py as it is (say --lr-decay-until, for a run whose line of the rate has ended).

The run's own directory is a temporary one unless --run-dir is given. It needs the machine's cores to itself.
"""

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
STATUS = re.compile(r"steps ([\d,]+) \|")
WARMUP = 30  # seconds before the start figures: the processes have loaded and the games run


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30, help="length of the run (default: 30)")
    p.add_argument("--kill-every", type=float, default=120, help="seconds between kills (default: 120)")
    p.add_argument("--workers", type=int, default=2, help="--num-processes of the run (default: 2)")
    p.add_argument("--envs-per-worker", type=int, default=16, help="(default: 16)")
    p.add_argument("--env-name", default=None, help="main.py's default unless given")
    p.add_argument("--run-dir", default=None, help="where the run keeps its record (default: a temporary directory)")
    p.add_argument("--resume", default=None, metavar="RUN", help="soak a real run: continue this run directory")
    args, args.main_flags = p.parse_known_args(argv)  # the rest is main.py's, which reports its own errors
    return args


class Soak:
    """main.py in a process of its own, its status lines kept with the time each arrived."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(
            [sys.executable, "main.py", *argv],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.main = psutil.Process(self.proc.pid)
        self.counts, self.errors = [], []  # (time, steps) of each status line; stderr's lines
        threading.Thread(target=self._read_status, daemon=True).start()
        threading.Thread(target=self._read_errors, daemon=True).start()

    def _read_status(self):
        for line in self.proc.stdout:
            found = STATUS.match(line)
            if found:
                self.counts.append((time.time(), int(found.group(1).replace(",", ""))))

    def _read_errors(self):
        for line in self.proc.stderr:
            self.errors.append(line.rstrip("\n"))

    def worker(self, rank: int) -> psutil.Process | None:
        for child in self.main.children():
            try:
                if child.name() == f"a3c worker {rank}":
                    return child
            except psutil.NoSuchProcess:
                pass
        return None

    def rate(self, start: float, end: float) -> float | None:
        """Steps/s between the status lines nearest to `start` and `end` (None without two lines there)."""
        inside = [(t, s) for t, s in self.counts if start <= t <= end]
        if len(inside) < 2:
            return None
        (t0, s0), (t1, s1) = inside[0], inside[-1]
        return (s1 - s0) / (t1 - t0)

    def resources(self) -> tuple[float, int]:
        return self.main.memory_info().rss / 2**20, self.main.num_fds()


def main(argv=None) -> int:
    args = parse_args(argv)
    seconds = args.minutes * 60
    window = min(60.0, args.kill_every / 2)  # steps/s is measured over this long before and after each kill
    run_dir = args.run_dir or args.resume or tempfile.mkdtemp(prefix="soak-")
    argv = [
        "--num-processes",
        str(args.workers),
        "--envs-per-worker",
        str(args.envs_per_worker),
        "--max-time",
        f"{seconds:g}",
        "--status-interval",
        "5",
        "--record-every",
        "0",
        "--run-dir",
        run_dir,
        "--max-restarts",
        str(int(seconds // args.kill_every) + 1),
    ]
    if args.env_name:
        argv += ["--env-name", args.env_name]
    if args.resume:
        argv += ["--resume", args.resume]
    argv += args.main_flags
    print(
        f"soak: {args.minutes:g} min of {args.workers} workers x {args.envs_per_worker} games, a worker killed "
        f"every {args.kill_every:g} s; run directory {run_dir}",
        flush=True,
    )
    soak = Soak(argv)
    start = time.time()
    kills = []  # (time, rank)
    try:
        time.sleep(WARMUP)
        start_rss, start_fds = soak.resources()
        next_kill, rank = start + args.kill_every, 0
        while soak.proc.poll() is None and next_kill < start + seconds - window:
            time.sleep(max(next_kill - time.time(), 0))
            victim = soak.worker(rank)
            if victim is not None:
                victim.kill()
                kills.append((time.time(), rank))
            rank, next_kill = (rank + 1) % args.workers, next_kill + args.kill_every
        while soak.proc.poll() is None and time.time() < start + seconds - 5:
            time.sleep(1)
        end_rss, end_fds = soak.resources()
        status = soak.proc.wait(timeout=120)
    finally:
        if soak.proc.poll() is None:
            soak.proc.send_signal(signal.SIGINT)
            soak.proc.wait(timeout=60)
    time.sleep(0.5)

    print(f"{'kill':>4} {'at s':>6} {'worker':>6} {'steps/s before':>15} {'steps/s after':>14}")
    for n, (when, rank) in enumerate(kills, 1):
        before, after = soak.rate(when - window, when), soak.rate(when, when + window)
        print(f"{n:>4} {when - start:6.0f} {rank:>6} {before or float('nan'):15,.0f} {after or float('nan'):14,.0f}")
    named = sum(bool(re.match(r"main.py: worker \d died: killed by signal SIGKILL; restarted", e)) for e in soak.errors)
    print(
        f"main process: RSS {start_rss:.1f} -> {end_rss:.1f} MB, open fds {start_fds} -> {end_fds} "
        f"(at {WARMUP} s and at the end)"
    )
    print(
        f"whole run: {soak.rate(start, start + seconds + 60) or 0:,.0f} steps/s; {len(kills)} kills, {named} "
        f"restarts named; exit status {status}"
    )
    return 0 if status == 0 and named == len(kills) else 1


if __name__ == "__main__":
    sys.exit(main())
