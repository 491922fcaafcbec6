"""--lr-decay-until: the A3C paper's linear learning-rate decay, as the command line sets it up on a new run
and on a resume, and as the workers apply it."""

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from gymnasium.spaces import Discrete

import my_optim
from a3c_extras.checkpoints import checkpoint, save_checkpoint
from a3c_extras.links import WorkerLink
from a3c_extras.schedule import learning_rate
from catch import Catch
from conftest import ROOT
from helpers import params_from
from model import ActorCritic
from train import train


def test_the_rate_falls_on_a_line_from_where_the_decay_started_to_zero():
    args = SimpleNamespace(lr=4e-4, lr_decay_until=3_000, lr_decay_from=1_000)
    assert learning_rate(args, 1_000) == pytest.approx(4e-4)
    assert learning_rate(args, 1_500) == pytest.approx(3e-4)
    assert learning_rate(args, 2_000) == pytest.approx(2e-4)
    assert learning_rate(args, 3_000) == 0.0
    assert learning_rate(args, 5_000) == 0.0  # past the end: 0, never negative
    assert learning_rate(args, 0) == pytest.approx(4e-4)  # never above --lr
    assert learning_rate(SimpleNamespace(lr=4e-4, lr_decay_until=0), 10**9) == 4e-4  # the course: constant
    assert learning_rate(SimpleNamespace(lr=1e-4), 10**9) == 1e-4  # a learner's own Params


def _saved_run(tmp_path, counter: int, args=None):
    """A run directory whose checkpoint is at `counter` agent steps, saved with main.py's arguments `args`."""
    args = args or params_from(["--run-dir", str(tmp_path)])
    model = ActorCritic(1, Discrete(6))
    save_checkpoint(tmp_path / "checkpoint.pt", checkpoint(model, None, counter, 10.0, None, args))
    return tmp_path


def test_a_new_run_decays_from_step_zero_and_a_resume_carries_the_same_line_on(tmp_path):
    assert params_from(["--lr-decay-until", "5000"]).lr_decay_from == 0  # the paper's: over the whole run
    run = _saved_run(tmp_path, 2_000)
    first = params_from(["--resume", str(run), "--lr-decay-until", "6000"])
    assert (first.lr_decay_from, first.lr_decay_until) == (2_000, 6_000)  # starts where this sitting resumes
    # The next sitting resumes the decayed run at 4,000 steps: the same line goes on, without the flag.
    _saved_run(tmp_path, 4_000, first)
    second = params_from(["--resume", str(run)])
    assert (second.lr_decay_from, second.lr_decay_until) == (2_000, 6_000)
    assert learning_rate(second, 4_000) == pytest.approx(second.lr / 2)
    # A new end starts a new line at this sitting's step; 0 turns the decay off.
    third = params_from(["--resume", str(run), "--lr-decay-until", "8000"])
    assert (third.lr_decay_from, third.lr_decay_until) == (4_000, 8_000)
    assert learning_rate(params_from(["--resume", str(run), "--lr-decay-until", "0"]), 7_000) == second.lr


def test_a_decay_that_ends_before_the_run_s_steps_is_one_line_and_status_2(tmp_path):
    run = _saved_run(tmp_path, 2_000)
    out = subprocess.run(
        [sys.executable, "main.py", "--resume", str(run), "--lr-decay-until", "1500"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "main.py: error: --lr-decay-until 1500 is not beyond the 2000 agent steps the run has already played "
        "(--lr-decay-until 0: a constant --lr)"
    ]


@pytest.mark.parametrize("rollout", ["classic", "fast"])
def test_a_worker_steps_at_the_scheduled_rate(args, rollout):
    """Both loops set the rate before each step: half of --lr half-way down the line, and 0, which leaves
    the weights as they were, once past its end."""
    args.rollout, args.max_steps, args.lr = rollout, 600, 1e-3
    args.lr_decay_until, args.lr_decay_from = 1_200, 0
    model = ActorCritic(1, Discrete(3))
    optimizer = my_optim.SharedAdam(model.parameters(), lr=args.lr)
    link = WorkerLink(make_env=lambda _: Catch(), max_steps=args.max_steps)
    train(0, args, model, optimizer, link=link)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * (1_200 - 600) / 1_200, rel=0.02)

    args.lr_decay_until, args.max_steps = 600, 1_200  # the line ended where the first run stopped
    before = [p.detach().clone() for p in model.parameters()]
    steps_before = optimizer.state[next(model.parameters())]["step"].item()
    link = WorkerLink(make_env=lambda _: Catch(), max_steps=args.max_steps)
    link.counts.base.value = 600  # a run that goes on from the first's 600 steps
    train(0, args, model, optimizer, link=link)
    assert optimizer.state[next(model.parameters())]["step"].item() > steps_before  # it did step...
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # ...at a rate of 0
