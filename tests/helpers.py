"""Shared pieces of the tests: main.py run as a user runs it, the lines a command wrote on stderr, real A3C
workers, greedy play."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest
import torch
import torch.multiprocessing as mp

import main
import my_optim
from a3c_extras import cli, shared
from a3c_extras.evaluation import play_episode
from a3c_extras.links import SharedCounts, WorkerLink
from catch import Catch, make_catch
from conftest import ROOT
from model import ActorCritic
from train import train

LIVE_RUNS = []


@pytest.fixture(autouse=True)  # autouse in every test module that imports it
def no_run_left_behind():
    """Whatever a test asserts, the runs it started do not outlive it."""
    yield
    while LIVE_RUNS:
        run = LIVE_RUNS.pop()
        if run.proc.poll() is None:
            os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait()


class LiveRun:
    """main.py in its own session (so a signal can go to the whole group, as Ctrl-C does)."""

    def __init__(self, *argv):
        self.proc = subprocess.Popen(
            [sys.executable, "main.py", *argv],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        LIVE_RUNS.append(self)
        self.lines, self.errors = [], []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.errors), daemon=True).start()

    @staticmethod
    def _read(stream, into):
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_for(self, pattern, timeout=120, stream="lines"):
        """Until a line of stdout (or of stderr: stream="errors") matches `pattern`."""

        def matched():
            return any(re.search(pattern, line) for line in getattr(self, stream))

        wait_until(lambda: matched() or self.proc.poll() is not None, timeout)  # or the run ended
        if not matched():
            raise AssertionError(f"no line matching {pattern!r}; stdout: {self.lines}; stderr: {self.errors}")

    def children(self):
        return psutil.Process(self.proc.pid).children(recursive=True)

    def wait(self, timeout):
        returncode = self.proc.wait(timeout=timeout)
        time.sleep(0.5)  # let the readers finish
        return returncode


def params_from(argv=()):
    """main.py's Params as its command line fills them."""
    return cli.read_command_line(main.Params(), list(argv))


def shared_model_and_optimizer(params, env):
    """main.py's shared model and SharedAdam, in shared memory, for an environment's spaces."""
    return shared.shared_model_and_optimizer(params, env, ActorCritic, my_optim.SharedAdam)


def run_workers(args, num_workers: int, start_method: str = "fork", make_env=make_catch):
    """Train a fresh shared model on Catch with real `train` workers until args.max_steps."""
    torch.manual_seed(args.seed)
    shared_model, optimizer = shared_model_and_optimizer(args, Catch())
    ctx = mp.get_context(start_method)
    shared = SharedCounts(ctx, num_workers)
    links = [
        WorkerLink(counts=shared, slot=rank, make_env=make_env, max_steps=args.max_steps) for rank in range(num_workers)
    ]
    workers = [
        ctx.Process(target=train, args=(rank, args, shared_model, optimizer), kwargs={"link": links[rank]})
        for rank in range(num_workers)
    ]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=300)
    return shared_model, optimizer, shared.total(), [p.exitcode for p in workers]


def greedy_return(model, episodes: int = 200, seed: int = 123) -> float:
    env = Catch()
    env.reset(seed=seed)
    model.eval()
    return float(np.mean([play_episode(env, model, 100)[0] for _ in range(episodes)]))


def wait_until(condition, timeout: float, every: float = 0.2):
    """Poll `condition()` until it gives something true or `timeout` seconds passed; what it gave last. The tests
    wait this way for an event (a line, a process), never for a time or step budget that a faster loop would reach
    first."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(every)
    return value


def alive(processes) -> list[psutil.Process]:
    """Those of `processes` still running (a zombie has ended)."""
    found = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


def own_lines(stderr: str) -> list[str]:
    """The non-empty lines of a command's stderr, without the banner the ALE prints on loading (A.L.E, Stella)."""
    return [line for line in stderr.splitlines() if line and "A.L.E" not in line and "Stella" not in line]
