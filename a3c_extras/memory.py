"""Will the run fit in memory? Checked once, before the main process starts any child: a run that would
not fit stops with one line naming what it needs, what is available and how many workers would fit.

What a run takes, in MB of 2**20 bytes (as benchmarks/throughput.py prints them): the main process once,
the test process once, and each worker. A worker of the fast path (--rollout fast) takes a base, a little
per game (its emulator) and, per game, the rows kept for its rollout's backward pass: num_steps + 2 of
them (Rollout in fast_rollout.py: the steps, the bootstrap, the state after it), each the first
convolution's input windows and the four layers' outputs, with what the backward pass and glibc's heap
(fast_worker.keep_freed_memory) keep beside them. --rollout classic is one game's worker.

Measured on the 2-core machine of docs/speed.md (Linux, Python 3.11, torch 2.13.0+cpu): one training worker
of the recipe's settings but K and NS, forked as main.py forks it, for 5,000 to 20,000 agent steps, its private
memory (USS, psutil's memory_full_info) sampled every 0.1-0.3 s and its peak RSS (VmHWM); the range over 2 to
7 runs (the heap's layout differs from run to run, by up to a third):

    run                          worker USS   worker peak RSS
    K = 1, NS = 20                 35-36 MB        310-311 MB
    K = 16, NS = 5                 70-76 MB        346-352 MB
    K = 16, NS = 20               147-177 MB       424-453 MB   (the recipe's)
    K = 16, NS = 40               195-341 MB       471-617 MB
    K = 16, NS = 20, 80x80        361-685 MB       643-970 MB
    K = 16, NS = 20, LSTM 512     156-243 MB       445-532 MB
    --rollout classic, NS = 20        42 MB        311-312 MB
    the main process                 266 MB            390 MB   (401 MB after 29 minutes of a run)
    the test process                  26 MB            291 MB   (35 MB USS after 29 minutes, with videos)

Before a worker dropped its last update's activations ahead of the next rollout and ran ELU's backward pass in
place, the same runs took 40 MB (K = 1), 88-95 MB (NS = 5), 197-242 MB (NS = 20; peak RSS 480-541 MB), 386-390 MB
(NS = 40), 594-646 MB (80x80) and 259-273 MB (LSTM 512).

A worker's peak RSS (docs/speed.md's figure) counts the libraries and the pages it shares with the main
process: Linux starts the children with fork, and a child's copy of the main process's memory is shared
until written. Summed over the processes it counts them once per process, about twice the memory the run
takes. So the main process counts whole (its peak RSS: its own memory, the libraries' code, the shared
model) and each child its private memory. With spawn or forkserver (macOS, Windows; Linux from Python
3.14) a child imports torch itself: 126-144 MB more each, measured with the spawn start method.

Fitted to the highest of these and rounded up: a worker 30 MB + 1.1 MB per game (16 Breakout emulators
measured in one process: 19.5 MB) + 0.44 MB per row: 41 MB at K = 1, 97 at NS = 5, 203 at NS = 20, 343 at
NS = 40. The main process counts 420 MB (docs/runs.md's soak reached 422 MB), the test process 40 MB.

--frame-size 80: each row scales with the convolutions' activations, 3.5 times those of 42x42 frames (82,400
floats per row against 23,393): 593 MB a worker at K = 16, NS = 20, above three of the four runs measured; the
margin covers the fourth.

The margin: the estimate must stay below the available memory by 15%. The figures come from short runs on
one machine (another glibc, torch build or BLAS keeps other buffers); a worker's heap grows a little over a
long run (90 to 95-100 MB in 29 minutes at NS = 5); the available memory is a snapshot that other
programs can take back; and the run's own files (checkpoints, videos) need page cache."""

import math
import multiprocessing
from dataclasses import dataclass, replace

import psutil

from a3c_extras.cli import fail
from a3c_extras.errors import plural

MB = 2**20
MAIN = 420 * MB  # the main process, whole
TEST = 40 * MB  # the test process's private memory
WORKER = 30 * MB  # a worker's private memory before its games
GAME = 1.1 * MB  # one game's emulator
ROW = 0.44 * MB  # one step of one game kept for the backward pass (42x42 frames)
IMPORTS = 145 * MB  # what each child takes of its own when it is not forked: torch and the rest, imported
MARGIN = 1.15  # the estimate must fit in the available memory this many times over
FRAME = 42  # the course's frames


def conv_floats(side: int) -> int:
    """The floats a row keeps on side x side frames: the first convolution's 3x3 input windows, then the
    four convolutions' outputs (model.py: 32 channels, stride 2, padding 1: 42 -> 21 -> 11 -> 6 -> 3)."""
    sides = []
    for _ in range(4):
        side = (side - 1) // 2 + 1
        sides.append(side)
    return 9 * sides[0] ** 2 + 32 * sum(s * s for s in sides)


def forks(ctx) -> bool:
    """Whether `ctx` (multiprocessing or one of its contexts) starts its children with fork."""
    method = ctx.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
    return method == "fork"


@dataclass(frozen=True)
class Estimate:
    """The memory of a run of `workers` workers of `games` games each, in bytes (need: with the margin)."""

    workers: int
    games: int
    num_steps: int
    frame_size: int = FRAME
    forked: bool = True

    def worker(self, games: int | None = None) -> float:
        games = self.games if games is None else games
        row = ROW * conv_floats(self.frame_size) / conv_floats(FRAME)
        return WORKER + games * (GAME + (self.num_steps + 2) * row) + (0 if self.forked else IMPORTS)

    def fixed(self) -> float:
        """The main process and the test process."""
        return MAIN + TEST + (0 if self.forked else IMPORTS)

    def need(self, workers: int | None = None, games: int | None = None) -> float:
        workers = self.workers if workers is None else workers
        return MARGIN * (self.fixed() + workers * self.worker(games))

    def workers_within(self, available: float) -> int:
        """The most workers of this run's games that fit in `available` bytes."""
        return max(0, math.floor((available / MARGIN - self.fixed()) / self.worker()))

    def games_within(self, available: float) -> int:
        """The most games per worker with which this run's workers fit in `available` bytes."""
        per_worker = (available / MARGIN - self.fixed()) / self.workers
        return max(0, math.floor((per_worker - self.worker(0)) / (self.worker(1) - self.worker(0))))


def estimate(args, forked: bool = True) -> Estimate:
    games = args.envs_per_worker if args.rollout == "fast" else 1
    return Estimate(args.num_processes, games, args.num_steps, getattr(args, "frame_size", FRAME), forked)


def available_memory() -> int:
    """What the system could give the run now without swapping, in bytes."""
    return psutil.virtual_memory().available


def refusal(run: Estimate, available: float) -> str | None:
    """The one line that stops a run that would not fit in `available` bytes; None if it fits."""
    need = run.need()
    if need <= available:
        return None
    ways = []
    workers = min(run.workers_within(available), run.workers - 1)
    if workers >= 1:
        pinned = f" --envs-per-worker {run.games}" if run.games > 1 else ""  # a recipe would share its games
        ways.append(f"{plural(workers, 'worker')} would fit (--num-processes {workers}{pinned})")
    games = min(run.games_within(available), run.games - 1)
    if games >= 1:
        ways.append(f"{plural(games, 'game')} per worker (--envs-per-worker {games})")
    if not ways:  # neither alone: one worker with fewer games, or none at all
        games = min(replace(run, workers=1).games_within(available), run.games)
        if games >= 1:
            ways.append(f"1 worker x {plural(games, 'game')} would fit (--num-processes 1 --envs-per-worker {games})")
    advice = ", or ".join(ways) if ways else "not even one worker of one game would fit"
    verb = "needs" if run.workers == 1 else "need"
    return (
        f"main.py: error: {plural(run.workers, 'worker')} x {plural(run.games, 'game')} {verb} about "
        f"{need / 2**30:.1f} GB, {available / 2**30:.1f} GB is available: {advice}; "
        "--no-memory-check starts it anyway"
    )


def check(args, ctx=multiprocessing, available: float | None = None) -> None:
    """Stop the run (one line, exit status 2) if its processes would not fit in the available memory (by default
    the system's now). A cluster run (--ray-address) is not checked: its workers run on the other machines."""
    if args.no_memory_check or args.ray_address:
        return
    available = available_memory() if available is None else available
    line = refusal(estimate(args, forks(ctx)), available)
    if line is not None:
        fail(line)
