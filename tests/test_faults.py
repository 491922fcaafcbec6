"""Runs that survive what goes wrong: children killed at any moment are replaced, a child that fails at every start
ends the run in one line, a checkpoint that cannot be written costs nothing."""

import errno
import math
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import torch
from test_main import LiveRun, no_run_left_behind  # noqa: F401 (the fixture stops every run)

import test as test_process  # the project's test.py, not Python's own test package
from a3c_extras import supervision
from a3c_extras.checkpoints import load_checkpoint
from a3c_extras.jobs import Job
from catch import Catch, make_catch
from conftest import ROOT
from helpers import alive, params_from, shared_model_and_optimizer, wait_until
from train import train

FAST = ["--num-processes", "2", "--eval-interval", "1", "--record-every", "0", "--status-interval", "2"]


def test_a_run_survives_children_killed_one_after_another(tmp_path):
    """The fault run: SIGKILL to a worker, to the test process, then to the other worker, each once its predecessor's
    replacement is announced. A child can be killed in any state (mid-rollout, mid-send of its events, asleep
    between evaluations): the run replaces each, names each kill, trains on and stops cleanly at Ctrl-C; its
    checkpoint loads and resumes; no process of it is left. Every step waits for an event, none for a budget."""
    run = LiveRun(*FAST, "--save-interval", "3", "--run-dir", str(tmp_path))
    run.wait_for(r"^steps [1-9]")  # the workers count steps
    seen, kills = set(), []
    for victim_name in ("a3c worker 0", "a3c test", "a3c worker 1"):
        children = {c.name(): c for c in alive(run.children())}
        seen.update(children.values())
        children[victim_name].kill()
        kills.append(victim_name[len("a3c ") :])
        run.wait_for(rf"{kills[-1]} died: killed by signal SIGKILL; restarted", stream="errors", timeout=20)

        def replacement_of(name=victim_name):
            return {c.name(): c for c in alive(run.children())}.get(name)

        replacement = wait_until(replacement_of, 10, every=0.1)  # it names itself once it runs
        assert replacement is not None, f"no {victim_name} after the restart"
        assert replacement.pid != children[victim_name].pid  # under its name in ps
    run.wait_for(rf"restarts {len(kills)}( |$)")  # the status line counts them
    steps_then = last_status_steps(run.lines)
    wait_until(lambda: last_status_steps(run.lines) > steps_then or run.proc.poll() is not None, 60)
    assert last_status_steps(run.lines) > steps_then and run.proc.poll() is None, (run.lines, run.errors)  # trains on
    seen.update(alive(run.children()))
    os.killpg(run.proc.pid, signal.SIGINT)
    assert run.wait(timeout=30) == 0, run.errors
    died = [re.match(r"main.py: (.*) died: killed by signal SIGKILL; restarted", line) for line in run.errors]
    assert [m.group(1) for m in died if m] == kills, run.errors
    assert not alive(seen)
    saved = load_checkpoint(tmp_path, num_actions=4)
    assert (tmp_path / "events.csv").read_text().count(",restart,") == len(kills)

    resumed = subprocess.run(
        [sys.executable, "main.py", "--resume", str(tmp_path), "--max-steps", str(saved["counter"] + 500)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(tmp_path)["counter"] >= saved["counter"] + 500


def last_status_steps(lines) -> int:
    counts = [int(m.group(1).replace(",", "")) for line in lines if (m := re.match(r"steps ([\d,]+) \|", line))]
    return counts[-1] if counts else 0


def broken_train(rank, params, shared_model, optimizer, link):
    raise RuntimeError("this worker fails at every start")


def catch_run(tmp_path, *argv):
    """A run on Catch in this process, as main.py makes it (fork), before its children are started."""
    args = params_from(
        [
            "--num-processes",
            "2",
            "--eval-interval",
            "1",
            "--record-every",
            "0",
            "--status-interval",
            "1",
            "--run-dir",
            str(tmp_path),
            *argv,
        ]
    )
    torch.manual_seed(args.seed)
    shared_model, optimizer = shared_model_and_optimizer(args, Catch())
    return args, shared_model, optimizer, supervision.Run(args, shared_model, optimizer, make_env=make_catch)


def start(run, args, shared_model, optimizer, worker_1=train) -> list:
    """The children as main.py starts them: the test process, then worker 0 and worker 1."""
    mp = torch.multiprocessing
    processes = [mp.Process(target=run.test_process(test_process.test), args=(args.num_processes, args, shared_model))]
    for rank, target in enumerate([train, worker_1]):
        processes.append(mp.Process(target=run.worker(target), args=(rank, args, shared_model, optimizer)))
    for p in processes:
        p.start()
    return processes


def test_a_worker_that_fails_at_every_start_ends_the_run_after_its_restarts(tmp_path, capfd):
    args, shared_model, optimizer, run = catch_run(tmp_path, "--max-restarts", "2", "--restart-window", "60")
    before = set(psutil.Process().children(recursive=True))  # a helper process of an earlier test is not the run's
    started = time.time()
    assert run.supervise(start(run, args, shared_model, optimizer, worker_1=broken_train)) == 1
    assert time.time() - started < 30
    err = capfd.readouterr().err
    why = r"RuntimeError: this worker fails at every start \(test_faults.py:\d+\)"
    assert len(re.findall(rf"main.py: worker 1 died: {why}; restarted", err)) == 2, err
    assert re.search(
        rf"main.py: worker 1 died: {why} \(died 3 times within 60 s\); other processes stopped, "
        "checkpoint saved in",
        err,
    ), err
    assert "Traceback" not in err
    load_checkpoint(tmp_path)
    assert (tmp_path / "events.csv").read_text().count(",restart,worker 1,RuntimeError") == 2
    assert not alive(set(psutil.Process().children(recursive=True)) - before)


def failing_writes(monkeypatch, fail_calls, path):
    """torch.save in this process, its calls numbered from 1: those in fail_calls write half a file and fail as a
    full disk does. Returns, per failed call, the step count of the checkpoint that was on disk then."""
    real_save, calls, on_disk = torch.save, [0], []
    main_pid = os.getpid()

    def save(obj, f, *a, **k):
        if os.getpid() != main_pid or not str(getattr(f, "name", "")).endswith("checkpoint.pt.tmp"):
            return real_save(obj, f, *a, **k)  # best.pt in the test process, or anything else
        calls[0] += 1
        if calls[0] not in fail_calls:
            return real_save(obj, f, *a, **k)
        on_disk.append(load_checkpoint(path)["counter"] if path.exists() else None)
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save)
    return on_disk, calls


class Listener(Job):
    """Every event the run's jobs are handed, by type."""

    def __init__(self):
        self.heard = {}

    def on_event(self, event) -> None:
        self.heard.setdefault(type(event).__name__, []).append(event)


def test_a_checkpoint_that_cannot_be_written_costs_nothing(tmp_path, capfd, monkeypatch):
    """Checkpoints every second; the 2nd and 3rd fail as on a full disk. The run goes on to its budget, says so in
    one line each time, the first checkpoint stays on disk and loads, and the next write replaces it. The budget
    leaves room for a 4th save and the final one on a loaded machine (6 s did not, with two games beside it)."""
    args, shared_model, optimizer, run = catch_run(tmp_path, "--save-interval", "1", "--max-time", "10")
    on_disk, calls = failing_writes(monkeypatch, {2, 3}, tmp_path / "checkpoint.pt")
    listener = Listener()
    run.jobs.append(listener)
    assert run.supervise(start(run, args, shared_model, optimizer)) == 0
    assert {"TrainGame", "EvalEpisode", "Losses", "Speed"} <= set(listener.heard), set(listener.heard)  # a dashboard's
    assert all(all(map(math.isfinite, losses)) for losses in listener.heard["Losses"])
    err = capfd.readouterr().err
    assert calls[0] >= 4, calls  # the saves after the failed ones were tried, and the final one
    assert len(on_disk) == 2 and on_disk[0] is not None and on_disk[0] == on_disk[1]  # the first one, intact
    lines = re.findall(r"main.py: checkpoint not written: .*", err)
    assert len(lines) == 2, err
    assert re.fullmatch(
        rf"main.py: checkpoint not written: No space left on device; the last good one, of step "
        rf"{on_disk[0]:,} \(\d\d:\d\d:\d\d\), is {tmp_path}/checkpoint.pt; trying again in 1 s",
        lines[0],
    ), lines[0]
    final = load_checkpoint(tmp_path)
    assert final["counter"] > on_disk[0]  # written again once the disk had room
    assert not (tmp_path / "checkpoint.pt.tmp").exists()
    assert (tmp_path / "events.csv").read_text().count(",write failed,main,checkpoint: No space left") == 2


def test_a_final_checkpoint_that_cannot_be_written_ends_with_status_1(tmp_path, capfd, monkeypatch):
    args, shared_model, optimizer, run = catch_run(tmp_path, "--save-interval", "1", "--max-time", "3")
    on_disk, calls = failing_writes(monkeypatch, set(range(2, 100)), tmp_path / "checkpoint.pt")
    assert run.supervise(start(run, args, shared_model, optimizer)) == 1
    err = capfd.readouterr().err
    assert re.search(
        rf"main.py: error: time budget of 3 s reached, but the final checkpoint could not be written; "
        rf"the last good one, of step {on_disk[0]:,} .*, is {tmp_path}/checkpoint.pt",
        err,
    ), err
    assert load_checkpoint(tmp_path)["counter"] == on_disk[0]
