"""The supervisor's parts on their own, without training: the restart policy on a fake clock, the pool of children
with tiny targets (one that exits 1, raises, is SIGKILLed mid-message), and the run's loop fed events by hand."""

import multiprocessing
import os
import signal
import time
from types import SimpleNamespace

import pytest

from a3c_extras.events import ChildError, EvalEpisode, GaveUp, Restarted, TrainGame
from a3c_extras.jobs import Job
from a3c_extras.links import FRAME, SharedCounts
from a3c_extras.pool import ChildSpec, Pool
from a3c_extras.restarts import RestartPolicy
from a3c_extras.supervision import Run
from catch import Catch, make_catch
from helpers import params_from, shared_model_and_optimizer, wait_until

CTX = multiprocessing.get_context("fork")


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_policy_restarts_until_more_than_max_restarts_deaths_fall_within_the_window():
    clock = FakeClock()
    policy = RestartPolicy(max_restarts=2, window=60, clock=clock)
    assert policy.died("worker 0", "killed") is None
    clock.now += 10
    assert policy.died("worker 0", "killed") is None
    assert policy.died("worker 1", "killed") is None  # each name has its own deaths
    clock.now += 10
    assert policy.died("worker 0", "killed by signal SIGKILL") == "killed by signal SIGKILL (died 3 times within 60 s)"
    assert policy.restarts == {"worker 0": 2, "worker 1": 1}


def test_deaths_older_than_the_window_are_forgotten():
    clock = FakeClock()
    policy = RestartPolicy(max_restarts=1, window=60, clock=clock)
    for _ in range(5):  # one death a minute and a bit: never two within the window
        assert policy.died("machine 1", "its process ended") is None
        clock.now += 61
    assert policy.restarts["machine 1"] == 5
    assert policy.died("machine 1", "x") is None and policy.died("machine 1", "x") is not None


def exits_1(rank, marker, link):
    link.report(TrainGame(rank, 1, 0.0, 1))  # told before it dies: handed on all the same
    link.close()
    os._exit(1)


def raises(rank, marker, link):
    raise RuntimeError(f"bad rank {rank}")


def killed_mid_message(rank, marker, link):
    """Half a frame on the pipe, then SIGKILL: the pool must neither wait for the rest nor take it for an event."""
    os.write(link.writer.fileno(), FRAME.pack(1_000) + b"half")
    os.kill(os.getpid(), signal.SIGKILL)


def plays_until_stopped(rank, marker, link):
    with open(marker, "a") as f:
        f.write(f"{rank}\n")  # each start, with the arguments it was given
    while not link.stop_requested():
        time.sleep(0.05)


def pool_of(targets, tmp_path, max_restarts=2):
    heard = []
    counts = SharedCounts(CTX, len(targets))
    limits = SimpleNamespace(max_restarts=max_restarts, restart_window=600, max_steps=0, max_nonfinite=100)
    pool = Pool(CTX, counts, heard.append, limits)
    for rank, target in enumerate(targets):
        pool.start(ChildSpec("worker", rank, target, (rank, str(tmp_path / f"started-{rank}"))))
    return pool, heard


def poll_until(pool, done, timeout=30):
    """Until done(), the pool polled all along (its poll waits a tenth of a second for its children)."""
    assert wait_until(lambda: pool.poll(0.1) or done(), timeout, every=0)


def kinds(heard):
    return [type(event).__name__ for event in heard]


def test_a_child_that_exits_1_is_restarted_with_its_arguments_until_the_policy_gives_up(tmp_path):
    pool, heard = pool_of([plays_until_stopped, exits_1], tmp_path)
    poll_until(pool, lambda: any(isinstance(e, GaveUp) for e in heard))
    restarts = [e for e in heard if isinstance(e, Restarted)]
    assert [(e.name, e.why, e.restarts) for e in restarts] == [("worker 1", "exited with status 1", n) for n in (1, 2)]
    assert heard[-1] == GaveUp("worker 1", "exited with status 1 (died 3 times within 600 s)")
    assert kinds(heard).count("TrainGame") == 3  # what each of its three lives told
    assert [c.spec.name for c in pool.alive()] == ["worker 0"]  # the other plays on
    pool.stop()
    assert not pool.alive() and (tmp_path / "started-0").read_text() == "0\n"  # started once; stopping is no death
    assert all(isinstance(e, TrainGame | Restarted | GaveUp) for e in heard)


def test_a_child_that_raises_is_named_by_its_exception_in_one_line(tmp_path):
    pool, heard = pool_of([raises], tmp_path, max_restarts=0)
    poll_until(pool, lambda: heard)
    (failure,) = heard
    assert failure.name == "worker 0" and failure.why.startswith("RuntimeError: bad rank 0 (test_supervision.py:")
    assert not any(isinstance(e, ChildError) for e in heard)  # kept by the pool, not handed on


def test_a_child_killed_mid_message_is_replaced_and_its_half_message_dropped(tmp_path):
    pool, heard = pool_of([killed_mid_message], tmp_path, max_restarts=1)
    poll_until(pool, lambda: any(isinstance(e, GaveUp) for e in heard))
    assert heard == [
        Restarted("worker 0", "killed by signal SIGKILL", 1),
        GaveUp("worker 0", "killed by signal SIGKILL (died 2 times within 600 s)"),
    ]


def test_a_replacement_is_started_with_the_same_arguments(tmp_path):
    pool, heard = pool_of([plays_until_stopped, plays_until_stopped], tmp_path)
    poll_until(pool, lambda: all((tmp_path / f"started-{r}").exists() for r in (0, 1)))
    os.kill(pool.children[1].process.pid, signal.SIGKILL)
    poll_until(pool, lambda: heard)
    assert heard == [Restarted("worker 1", "killed by signal SIGKILL", 1)]
    poll_until(pool, lambda: (tmp_path / "started-1").read_text() == "1\n1\n")
    pool.stop()
    assert len(heard) == 1 and not pool.alive()


class Script(Job):
    """A source of events for the run's loop: at each tick, the next of `events` (then nothing)."""

    def __init__(self, run, events):
        self.run, self.events = run, list(events)

    def __call__(self):
        if self.events:
            self.run.emit(self.events.pop(0))
        time.sleep(0.01)


def catch_run(tmp_path, *argv):
    args = params_from(["--num-processes", "1", "--run-dir", str(tmp_path), "--no-tensorboard", *argv])
    shared_model, optimizer = shared_model_and_optimizer(args, Catch())
    return Run(args, shared_model, optimizer, make_env=make_catch)


def test_the_loop_ends_at_a_gave_up_event_with_status_1_and_a_checkpoint(tmp_path, capsys):
    run = catch_run(tmp_path)
    run.tick = Script(run, [TrainGame(0, 10, 3.0, 50), EvalEpisode(20, 4.0, 60), GaveUp("worker 0", "why")])
    assert run.supervise([]) == 1
    err = capsys.readouterr().err
    assert f"main.py: worker 0 died: why; other processes stopped, checkpoint saved in {tmp_path}" in err
    rows = (tmp_path / "progress.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["train", "eval"]
    assert ",gave up,worker 0,why" in (tmp_path / "events.csv").read_text()
    assert (tmp_path / "checkpoint.pt").exists()


def test_the_loop_hands_every_event_to_every_job_in_order_and_ends_them_once(tmp_path):
    run = catch_run(tmp_path, "--max-time", "1")
    calls = []

    class Listens(Job):
        def on_event(self, event):
            calls.append(type(event).__name__)

        def on_end(self):
            calls.append("end")

    run.jobs.append(Listens())
    run.tick = Script(run, [TrainGame(0, 10, 3.0, 50), Restarted("test", "killed by signal SIGKILL", 1)])
    assert run.supervise([]) == 0
    assert calls == ["TrainGame", "Restarted", "end"]  # no Speed: no step was taken


@pytest.mark.parametrize("flag, says", [("--max-steps", "step budget of 5 reached"), ("--max-time", "time budget")])
def test_the_loop_stops_at_its_budgets(tmp_path, capsys, flag, says):
    run = catch_run(tmp_path, flag, "5" if flag == "--max-steps" else "0.5")
    run.tick = lambda: run.counts.steps.__setitem__(0, run.counts.steps[0] + 1) or time.sleep(0.01)
    assert run.supervise([]) == 0
    assert says in capsys.readouterr().out
