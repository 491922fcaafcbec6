"""main.py as a user runs it: budgets, the run directory, resume, signals, dead workers, bad input."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction

import psutil
import pytest
import torch
from gymnasium.spaces import Discrete

from a3c_extras import supervision
from a3c_extras.checkpoints import FORMAT, CheckpointError, checkpoint, load_checkpoint, save_checkpoint
from conftest import ROOT
from envs import create_atari_env
from helpers import LiveRun, no_run_left_behind, own_lines, params_from, shared_model_and_optimizer  # noqa: F401 (the fixture stops every run)
from model import ActorCritic

FAST = ["--num-processes", "2", "--eval-interval", "1", "--record-every", "0", "--status-interval", "2"]


def test_breakout_trains_and_prints_test_lines(tmp_path):
    run = LiveRun("--env-name", "BreakoutDeterministic-v4", "--num-processes", "2", "--run-dir", str(tmp_path))
    run.wait_for(
        r"^Time \d\dh \d\dm \d\ds, episode reward [-\d.]+, episode length \d+, num steps \d+, FPS \d+"
        r"(, cut short: no FIRE to serve in 1,000 agent steps)?$"  # an agent that never serves
    )
    time.sleep(3)
    os.killpg(run.proc.pid, signal.SIGINT)
    assert run.wait(timeout=30) == 0
    assert load_checkpoint(tmp_path)["counter"] > 0


def test_step_budget_ends_the_run_and_leaves_its_record(tmp_path):
    out = subprocess.run(
        [sys.executable, "main.py", *FAST, "--max-steps", "600", "--run-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    assert "step budget of 600 reached" in out.stdout
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["args"]["max_steps"] == 600 and config["seed"] == 1
    assert set(config["versions"]) == {"python", "torch", "gymnasium", "ale_py"}
    assert "git_commit" in config
    data = load_checkpoint(tmp_path, num_actions=4)
    assert 600 <= data["counter"] < 600 + 2 * 20 + 1  # at most one rollout per worker past the budget
    assert data["optimizer"]["state"][0]["step"].item() > 0
    assert data["frame_stats"]["frames"] > 0 and data["frame_stats"]["source"] == "worker 0, game 0"  # --frozen-stats
    with open(tmp_path / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and set(rows[0]) == {"kind", "time_s", "total_steps", "worker", "reward", "length"}
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000


def test_time_budget_ends_the_run(tmp_path):
    start = time.time()
    out = subprocess.run(
        [sys.executable, "main.py", *FAST, "--max-time", "4", "--run-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "time budget of 4 s reached" in out.stdout
    assert time.time() - start < 60


def test_resume_restores_weights_optimizer_and_counter(tmp_path):
    first = subprocess.run(
        [sys.executable, "main.py", *FAST, "--max-steps", "400", "--run-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert first.returncode == 0, first.stderr
    saved = load_checkpoint(tmp_path)
    rows_before = (tmp_path / "progress.csv").read_text().splitlines()

    # What the main process holds after resuming equals what was saved.
    args = params_from(["--resume", str(tmp_path), "--max-steps", "2000"])
    assert args.num_processes == 2 and args.record_every == 0  # the saved run's settings are the defaults
    shared_model, optimizer = shared_model_and_optimizer(args, create_atari_env(args.env_name))
    handlers = [signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)]
    run = supervision.Run(args, shared_model, optimizer)
    assert run.steps() == saved["counter"]
    for key, value in run.shared_model.state_dict().items():
        assert torch.equal(value, saved["model"][key])
    state = run.optimizer.state_dict()["state"]
    for index, moments in saved["optimizer"]["state"].items():
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(state[index][name], moments[name])
    assert all(moments["exp_avg"].is_shared() for moments in optimizer.state.values())  # still shared once loaded
    run.record.close()
    assert [signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)] == handlers  # the loop takes them

    second = subprocess.run(
        [sys.executable, "main.py", "--resume", str(tmp_path), "--max-steps", "2000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert second.returncode == 0, second.stderr
    assert "resumed at step" in second.stdout
    resumed = load_checkpoint(tmp_path)
    assert resumed["counter"] >= 2000
    assert resumed["elapsed"] > saved["elapsed"]
    assert resumed["optimizer"]["state"][0]["step"] > saved["optimizer"]["state"][0]["step"]
    rows_after = (tmp_path / "progress.csv").read_text().splitlines()
    assert rows_after[: len(rows_before)] == rows_before and len(rows_after) > len(rows_before)
    assert rows_after.count(rows_before[0]) == 1  # one header


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly(tmp_path, sig):
    # best.pt from the first finished evaluation (--fire-reset: an untrained agent need not serve to finish a game)
    run = LiveRun(*FAST, "--fire-reset", "--best-window", "1", "--run-dir", str(tmp_path))
    run.wait_for(r"^Time .*, num steps [1-9](?!.*cut short)")  # a finished game, after the workers counted steps
    children = run.children()
    assert len(children) >= 3
    sent = time.time()
    if sig == signal.SIGINT:
        os.killpg(run.proc.pid, sig)  # Ctrl-C reaches the whole process group
    else:
        run.proc.send_signal(sig)
    assert run.wait(timeout=10) == 0
    assert time.time() - sent < 10
    assert load_checkpoint(tmp_path)["counter"] > 0
    assert load_checkpoint(tmp_path / "best.pt")["best_reward"] is not None  # the finished game that was printed
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def _checkpoint_payload(num_actions=4, counter=7):
    return checkpoint(ActorCritic(1, Discrete(num_actions)), None, counter, 1.0, None, params_from([]))


def test_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _checkpoint_payload())

    def dies_half_way(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # as if killed mid-write

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _checkpoint_payload(counter=8))
    assert load_checkpoint(path)["counter"] == 7


def _bad_checkpoints(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, _checkpoint_payload())
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(os.urandom(4096))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign = tmp_path / "foreign.pt"
    torch.save(ActorCritic(1, Discrete(4)).state_dict(), foreign)  # a bare state_dict, not a checkpoint
    pong = tmp_path / "pong.pt"
    save_checkpoint(pong, _checkpoint_payload(num_actions=6))
    pickled = tmp_path / "pickled.pt"
    torch.save({**_checkpoint_payload(), "format": FORMAT, "when": Fraction(1, 3)}, pickled)  # ours, but for one object
    return {
        "missing": tmp_path / "missing.pt",
        "corrupt": corrupt,
        "truncated": truncated,
        "foreign": foreign,
        "wrong game": pong,
        "pickled object": pickled,
    }


def test_bad_checkpoints_raise_a_clear_error(tmp_path):
    for kind, path in _bad_checkpoints(tmp_path).items():
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(path, num_actions=4)
        assert str(path) in str(error.value) and "\n" not in str(error.value), kind


def test_a_pickle_a_weights_only_load_refuses_is_named_in_one_short_line(tmp_path):
    """Not PyTorch's paragraph of advice on loading it unsafely: what the file is, and what it holds."""
    path = _bad_checkpoints(tmp_path)["pickled object"]
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(error.value) == (
        f"{path} is not a checkpoint of this project (it holds objects a weights-only load refuses: fractions.Fraction)"
    )


@pytest.mark.parametrize("kind", ["truncated", "wrong game"])  # every kind: test_bad_checkpoints_raise_a_clear_error
def test_resume_from_a_bad_checkpoint_exits_2_with_one_line(tmp_path, kind):
    path = _bad_checkpoints(tmp_path)[kind]
    out = subprocess.run(
        [
            sys.executable,
            "main.py",
            "--resume",
            str(path),
            "--env-name",
            "BreakoutDeterministic-v4",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    lines = own_lines(out.stderr)
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert str(path) in lines[0]


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--lr", "-1"),
        ("--num-steps", "0"),
        ("--gamma", "x"),
        ("--max-steps", "-5"),
        ("--save-interval", "0"),
        ("--envs-per-worker", "0"),
    ],
)
def test_bad_values_are_refused_in_one_line(flag, value, capsys):
    """main.py's command line, read in this process (main.py itself: the test below)."""
    with pytest.raises(SystemExit) as exit_:
        params_from([flag, value])
    lines = capsys.readouterr().err.splitlines()
    assert exit_.value.code == 2 and len(lines) == 1 and flag in lines[0], lines


def test_main_py_refuses_a_bad_value_in_one_line():
    out = subprocess.run(
        [sys.executable, "main.py", "--num-processes", "0"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2
    lines = own_lines(out.stderr)
    assert len(lines) == 1 and "--num-processes" in lines[0], out.stderr


def test_several_games_per_worker_need_the_fast_rollout():
    out = subprocess.run(
        [sys.executable, "main.py", "--envs-per-worker", "2", "--rollout", "classic"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    lines = own_lines(out.stderr)
    assert len(lines) == 1 and "--envs-per-worker 2 needs --rollout fast" in lines[0], out.stderr
