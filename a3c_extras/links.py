"""What a child process (a worker, the test process) shares with its supervisor: a stop flag and one step-count
slot per child in shared memory, and a pipe for its events, one frame a batch (length, then pickle). A child killed
in any state leaves nothing the supervisor waits on: no lock, and a frame cut short is dropped with the pipe."""

import ctypes
import math
import multiprocessing as mp
import os
import pickle
import signal
import struct
import sys
import threading
import time
from collections import deque

from a3c_extras import frame_stats
from a3c_extras.best import BestWeights
from a3c_extras.cli import complete
from a3c_extras.errors import where_raised
from a3c_extras.events import ChildError, EvalEpisode, Losses, NonFinite, TrainGame, WriteFailed

# Each message on a child's pipe, as Connection.send_bytes frames it: its length, then a pickled list of events.
FRAME = struct.Struct("!i")
SEND_EVERY = 0.25  # seconds between a child's batches of events
LOSSES_EVERY = 2.0  # seconds between a worker's averages of its losses
EVENTS_KEPT = 100_000  # events a child keeps while its supervisor does not read (the oldest go first)


def budget_reached(steps: int, max_steps: int) -> bool:
    """The one definition of the step budget (--max-steps, 0 for none) being reached."""
    return bool(max_steps) and steps >= max_steps


class SharedCounts:
    """The run's shared memory, unlocked, each part with one writer: the stop flag (the run), the steps of earlier
    sittings or of the cluster (`base`), a slot per child, the best evaluation score (the test process)."""

    def __init__(self, ctx, slots: int, base: int = 0, best: float | None = None):
        self.stop = ctx.RawValue("b", 0)
        self.base = ctx.RawValue("q", base)
        self.steps = ctx.RawArray("q", max(slots, 1))
        self.best = ctx.RawValue("d", -math.inf if best is None else best)
        self.frames = ctx.RawArray("d", 3)  # worker 0's frame statistics (a3c_extras/frame_stats.py), its own

    def total(self) -> int:
        return self.base.value + sum(self.steps[:])

    def best_reward(self) -> float | None:
        return None if self.best.value == -math.inf else self.best.value


class WorkerLink:
    """A child's side of the run: the run's `counts` and its slot there, the pipe (`writer`) for its events. A link
    to no run (tests, a learner's own main.py) has counts of its own and keeps its latest events in `events`.
    `make_env(params)` replaces the Atari game (the tests' Catch); `best_path`: the test process's best.pt."""

    def __init__(
        self,
        name="worker",
        *,
        counts=None,
        slot=0,
        writer=None,
        make_env=None,
        max_steps=0,
        max_nonfinite=100,
        best_path=None,
    ):
        self.name, self.make_env, self.max_steps, self.max_nonfinite = name, make_env, max_steps, max_nonfinite
        self.in_run, self.counts = counts is not None, counts or SharedCounts(mp, 1)
        self.slot, self.writer, self.best_path, self.best = slot, writer, best_path, None
        self.events = deque(maxlen=EVENTS_KEPT)  # the outbox, or a link to no run's latest events
        self.game_return, self.game_length = {}, {}  # per game of the worker: raw score and length so far
        self.skipped = self.skipped_in_a_row = 0  # non-finite updates
        self.loss_sums, self.loss_count, self.losses_sent = [0.0] * 4, 0, time.time()
        self.sender, self.stopped = None, False
        self.params, self.start_steps = None, 0  # train's and test's params, completed, and the steps then (connect)

    def total_steps(self) -> int:
        return self.counts.total()

    def speed(self, start_time: float) -> str:
        """What the test process prints after the course's three fields: the run's steps and rate; none alone."""
        if not self.in_run:
            return ""
        steps = self.total_steps()
        return f", num steps {steps}, FPS {(steps - self.start_steps) / max(time.time() - start_time, 1e-9):.0f}"

    def stop_requested(self) -> bool:
        """The run asked to stop, or its step budget is reached."""
        return self.stopped or bool(self.counts.stop.value) or budget_reached(self.total_steps(), self.max_steps)

    def request_stop(self) -> None:
        """Stop this child alone (a test's worker in a thread); a run's children are stopped by the run."""
        self.stopped = True

    def wait(self, seconds: float) -> None:
        """Sleep, but wake up when the run stops."""
        deadline = time.time() + seconds
        while not self.stop_requested() and time.time() < deadline:
            time.sleep(min(0.2, max(deadline - time.time(), 0)))

    def report(self, event) -> None:
        """Queue an event for the supervisor; never blocks (the child's sender thread writes the pipe)."""
        self.events.append(event)
        if self.sender is None and self.writer is not None:
            self.sender = Sender(self.writer, self.events)

    def game_step(self, rank: int, reward: float, done: bool, info: dict, game: int = 0) -> None:
        """Count one agent step and the raw score of the worker's game number `game`, reported when the game is over
        (with --life-loss an episode ends at each lost life, the game only when info says so)."""
        self.counts.steps[self.slot] += 1  # this slot is written by this child alone
        self.game_return[game] = self.game_return.get(game, 0.0) + reward
        self.game_length[game] = self.game_length.get(game, 0) + 1
        if done and info.get("game_over", True):
            self.report(TrainGame(rank, self.total_steps(), self.game_return.pop(game), self.game_length.pop(game)))

    def frame_stats(self, rank: int, env) -> None:
        """Worker 0: its first game's frame statistics into the run's shared memory, for the checkpoints."""
        if rank == 0:
            frame_stats.publish(self.counts.frames, env)

    def update(self, rank: int, policy_loss, value_loss, entropy, grad_norm) -> bool:
        """After backward and clipping: whether the update may go to the shared model. A non-finite one is skipped
        (max_nonfinite in a row end the worker); the finite ones are averaged for the dashboard."""
        values = [
            float(v.detach() if hasattr(v, "detach") else v)  # floats or 1-element tensors
            for v in (policy_loss, value_loss, entropy, grad_norm)
        ]
        if not all(math.isfinite(v) for v in values):
            self.skipped += 1
            self.skipped_in_a_row += 1
            self.report(NonFinite(rank, self.skipped))
            if self.skipped_in_a_row >= self.max_nonfinite:
                raise FloatingPointError(f"{self.skipped_in_a_row} updates in a row had a non-finite loss or gradient")
            return False
        self.skipped_in_a_row = 0
        self.loss_sums = [s + v for s, v in zip(self.loss_sums, values)]
        self.loss_count += 1
        if time.time() - self.losses_sent >= LOSSES_EVERY:
            self.report(Losses(rank, self.total_steps(), *(s / self.loss_count for s in self.loss_sums)))
            self.loss_sums, self.loss_count, self.losses_sent = [0.0] * 4, 0, time.time()
        return True

    def evaluation(
        self, rank: int, num_steps: int, reward: float, length: int, model, params, cut_short: bool = False
    ) -> None:
        """After an evaluation episode: report it, and keep best.pt; an episode the stuck-agent guard cut short
        (a3c_extras/stall.py) is no finished game and does not count."""
        self.report(EvalEpisode(num_steps, reward, length, cut_short))
        if self.best_path is not None and not cut_short:
            self.best = self.best or BestWeights(self.counts, self.best_path)
            why = self.best.add(reward, num_steps, model, params)
            if why is not None:
                self.report(WriteFailed("best.pt", why))

    def close(self, timeout: float = 5) -> None:
        """Send what is still queued (up to `timeout` seconds)."""
        if self.sender is not None:
            self.sender.flush(timeout)


def connect(params, link: WorkerLink | None = None, name: str = "worker"):
    """What train and test do first: params completed with the defaults of the fields they lack (a learner's own
    Params has the course's eight), and the run's link, or one to no run that ends with this process's parent."""
    params = complete(params)
    if link is None:
        link = WorkerLink(name, max_steps=params.max_steps, max_nonfinite=params.max_nonfinite)
        watch_parent()
    link.params, link.start_steps = params, link.total_steps()
    return params, link


class Sender:
    """A child's thread that sends its queued events in batches: only it waits on the pipe, never the playing."""

    def __init__(self, writer, outbox: deque):
        self.writer, self.outbox = writer, outbox  # the writer kept open as long as the sender lives
        self.wake, self.idle = threading.Event(), threading.Event()
        threading.Thread(target=self.run, daemon=True, name="link-sender").start()

    def run(self) -> None:
        while True:
            self.wake.wait(SEND_EVERY)
            self.wake.clear()
            batch = []
            while self.outbox:
                batch.append(self.outbox.popleft())
            if batch:
                try:
                    self.writer.send_bytes(pickle.dumps(batch))  # FRAME, then the pickle
                except OSError:
                    return  # the supervisor is gone: the child's parent watch ends it
            if not self.outbox:
                self.idle.set()

    def flush(self, timeout: float) -> None:
        self.idle.clear()
        self.wake.set()
        self.idle.wait(timeout)


class Inbox:
    """The supervisor's end of a child's pipe: whatever it holds now, read without waiting, as whole messages."""

    def __init__(self, reader):
        self.reader, self.buffer = reader, b""  # buffer: the bytes of a message not yet whole
        os.set_blocking(reader.fileno(), False)

    def fileno(self) -> int:
        return self.reader.fileno()

    def read(self) -> list:
        for _ in range(64):  # a bounded loop: a child that talks fast cannot hold the supervisor here
            try:
                data = os.read(self.reader.fileno(), 1 << 16)
            except BlockingIOError:
                break
            if not data:
                break
            self.buffer += data
        events = []
        while len(self.buffer) >= FRAME.size:
            (size,) = FRAME.unpack_from(self.buffer)
            if len(self.buffer) < FRAME.size + size:
                break
            payload, self.buffer = self.buffer[FRAME.size : FRAME.size + size], self.buffer[FRAME.size + size :]
            try:
                events += pickle.loads(payload)
            except Exception:  # noqa: BLE001 - cannot happen with one writer per pipe; dropped if it does
                continue
        return events

    def close(self) -> None:
        self.reader.close()


class ChildBody:
    """Every child's target (picklable, for fork and spawn): `target(*args, link=link)`, Ctrl-C left to the main
    process, the child ended with its parent, an exception told in one line (ChildError)."""

    def __init__(self, target, link: WorkerLink):
        self.target, self.link = target, link

    def __call__(self, *args):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        link = self.link
        name_process(f"a3c {link.name}")  # "a3c worker 3"
        watch_parent()
        try:
            self.target(*args, link=link)
        except Exception as error:
            link.report(ChildError(link.name, where_raised(error)))
            link.close(timeout=2)
            sys.exit(1)
        link.close()


def name_process(name: str) -> None:
    """The name ps and top show for this process (Linux: its first 15 bytes); elsewhere nothing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    pr_set_name = 15  # prctl's option number, from linux/prctl.h
    libc.prctl(pr_set_name, name.encode()[:15], 0, 0, 0)


def watch_parent() -> None:
    """End this process when its parent ends (killed, even): a child never plays on alone."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()
