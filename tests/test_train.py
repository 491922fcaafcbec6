from types import SimpleNamespace

import pytest
import torch
from gymnasium.spaces import Discrete

import my_optim
from a3c_extras import fast_worker
from a3c_extras.events import NonFinite, TrainGame
from a3c_extras.fast_worker import a3c_loss
from a3c_extras.links import WorkerLink
from catch import Catch, make_catch
from helpers import greedy_return, params_from, run_workers
from model import ActorCritic
from scripted import ScriptedGame, force_actions, run_train
from train import train

THREE = Discrete(3)  # Catch's actions

LOSS_ARGS = SimpleNamespace(gamma=0.9, tau=0.8, entropy_coef=0.01)
REWARDS = [1.0, 0.0, -1.0]


def _rollout_terms():
    values = torch.tensor([0.5, 0.2, -0.3], requires_grad=True)
    log_probs = torch.tensor([-0.1, -0.2, -0.3], requires_grad=True)
    entropies = torch.tensor([1.0, 1.1, 1.2], requires_grad=True)
    return values, log_probs, entropies


@pytest.mark.parametrize(
    "R, value_loss, policy_loss, value_grad, policy_grad",
    [
        # Terminal rollout (R = 0), worked out by hand with gamma 0.9, lambda 0.8:
        #   returns 0.19, -0.9, -1;  deltas 0.68, -0.47, -0.7;  GAE -0.02128, -0.974, -0.7
        (0.0, 0.89805, -0.439928, [0.31, 1.1, 0.7], [0.02128, 0.974, 0.7]),
        # Bootstrapped from V(s_3) = 2:
        #   returns 1.648, 0.72, 0.8;  deltas 0.68, -0.47, 1.1;  GAE 0.91184, 0.322, 1.1
        (2.0, 1.399152, 0.452584, [-1.148, -0.52, -1.1], [-0.91184, -0.322, -1.1]),
    ],
)
def test_a3c_loss_on_a_hand_computed_rollout(R, value_loss, policy_loss, value_grad, policy_grad):
    values, log_probs, entropies = _rollout_terms()
    p_loss, v_loss = a3c_loss(values, log_probs, entropies, REWARDS, R, LOSS_ARGS)
    assert v_loss.item() == pytest.approx(value_loss, abs=1e-5)
    assert p_loss.item() == pytest.approx(policy_loss, abs=1e-5)
    (p_loss + v_loss).backward()
    # The critic is trained by the value loss only: the advantages in the policy loss are constants.
    torch.testing.assert_close(values.grad, torch.tensor(value_grad))
    torch.testing.assert_close(log_probs.grad, torch.tensor(policy_grad))
    torch.testing.assert_close(entropies.grad, torch.full((3,), -0.01))


@pytest.mark.parametrize("rollout", ["classic", "fast"])
def test_shared_gradient_is_the_latest_local_gradient(rollout, monkeypatch):
    """The PyTorch 2 pitfall: the same episode played three times by unchanged weights must hand the
    same gradient to the shared model each time, not the sum of the old ones (1x, 2x, 3x)."""
    args = params_from(["--max-grad-norm", "1e9"])  # no clipping: it would hide a 2x gradient
    force_actions(monkeypatch, [0, 1, 2, 3, 1] * 12)
    grads = run_train(args, rollout, ScriptedGame(length=20, repeat=True), updates=3)
    assert len(grads) == 3
    for later in grads[1:]:
        for name, grad in grads[0].items():
            assert grad.abs().max() > 0, name
            torch.testing.assert_close(later[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_non_finite_update_is_skipped_and_weights_stay_finite(args):
    args.max_steps, args.nan_reward_at = 400, 5
    shared_model = ActorCritic(1, THREE)
    optimizer = my_optim.SharedAdam(shared_model.parameters(), lr=args.lr)
    before = [p.detach().clone() for p in shared_model.parameters()]
    link = _link(args, _catch_env)
    train(0, args, shared_model, optimizer, link=link)
    assert sum(isinstance(e, NonFinite) for e in link.events) == 1  # the one update with the NaN reward
    assert all(torch.isfinite(p).all() for p in shared_model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, shared_model.parameters()))  # the others applied
    # Every Catch episode is one 6-step rollout: all of them but one stepped the optimizer.
    assert optimizer.state[next(shared_model.parameters())]["step"].item() == link.total_steps() // 6 - 1


def test_many_non_finite_updates_in_a_row_stop_the_worker(args):
    args.max_steps, args.max_nonfinite = 10_000, 3
    shared_model = ActorCritic(1, THREE)
    optimizer = my_optim.SharedAdam(shared_model.parameters(), lr=args.lr)
    with pytest.raises(FloatingPointError, match="3 updates in a row"):
        train(0, args, shared_model, optimizer, link=_link(args, _always_nan_env))
    assert all(torch.isfinite(p).all() for p in shared_model.parameters())


def _link(args, make_env):
    """A link to no run, as a worker's tests need: Catch, the step budget and the non-finite limit of args."""
    return WorkerLink(make_env=make_env, max_steps=args.max_steps, max_nonfinite=args.max_nonfinite)


def _catch_env(args):
    return Catch(args.nan_reward_at)


class _NanCatch(Catch):
    def step(self, action):
        obs, _, done, truncated, info = super().step(action)
        return obs, float("nan"), done, truncated, info


def _always_nan_env(args):
    return _NanCatch()


@pytest.mark.parametrize("envs_per_worker", [1, 4])
def test_workers_learn_catch_from_chance(args, envs_per_worker):
    """End to end: real ActorCritic, SharedAdam and two `train` processes, each playing one game (the
    course's A3C) or four at once (--envs-per-worker 4: one update from four rollouts). Random play
    scores about -0.73 on Catch; two workers reach 0.84-1.0 after 20k steps (one game each escapes
    uniform play within 4k-10k steps, four games each within about 10k, measured with and without
    another process loading the cores). A broken gradient, optimizer or GAE stays near chance. One
    run, one seed: Catch has no plateau whose length would decide the outcome (see tests/catch.py)."""
    args.lr, args.max_steps, args.envs_per_worker = 1e-3, 20_000, envs_per_worker
    torch.manual_seed(args.seed)
    assert greedy_return(ActorCritic(1, THREE)) < -0.3  # the model run_workers starts from (same seed) plays at chance
    shared_model, _, steps, exitcodes = run_workers(args, 2)
    assert exitcodes == [0, 0]
    assert steps >= 20_000
    score = greedy_return(shared_model)
    assert score > 0.5, f"greedy return after 20k steps: {score}; chance is about -0.73"


def test_rewards_are_clipped_for_learning_but_recorded_raw(args, monkeypatch):
    """A game scoring +-5 per dot: the A3C loss sees rewards in [-1, 1], progress.csv the raw score."""
    args.max_steps, args.reward_scale = 300, 5.0
    seen = []
    a3c_loss_of_the_worker = fast_worker.a3c_loss

    def recording_a3c_loss(values, log_probs, entropies, rewards, R, loss_args):
        seen.extend(rewards)
        return a3c_loss_of_the_worker(values, log_probs, entropies, rewards, R, loss_args)

    monkeypatch.setattr(fast_worker, "a3c_loss", recording_a3c_loss)
    shared_model = ActorCritic(1, THREE)
    optimizer = my_optim.SharedAdam(shared_model.parameters(), lr=args.lr)
    link = _link(args, make_catch)
    train(0, args, shared_model, optimizer, link=link)
    assert len(seen) >= 300
    assert set(seen) <= {-1.0, 0.0, 1.0} and {-1.0, 1.0} & set(seen)  # every dot ends in a clipped +-1
    game_returns = [event.ret for event in link.events if isinstance(event, TrainGame)]
    assert len(game_returns) >= 300 // 6 - 1
    assert set(game_returns) <= {-5.0, 5.0}  # one dot per game, its raw score


def test_each_game_of_a_worker_keeps_its_own_record(args):
    """--envs-per-worker 3 on Catch: every game reported to progress.csv is one dot (6 steps, +-1), not
    the sum of the three games played side by side."""
    args.max_steps, args.envs_per_worker = 300, 3
    shared_model = ActorCritic(1, THREE)
    optimizer = my_optim.SharedAdam(shared_model.parameters(), lr=args.lr)
    link = _link(args, make_catch)
    train(0, args, shared_model, optimizer, link=link)
    games = [event for event in link.events if isinstance(event, TrainGame)]
    assert len(games) >= 300 // 6 - 3
    assert {(game.ret, game.length) for game in games} <= {(-1.0, 6), (1.0, 6)}
    # One update per rollout of the three games, and three games end in each (6 steps per dot).
    assert optimizer.state[next(shared_model.parameters())]["step"].item() == len(games) // 3


def test_workers_run_under_spawn(args):
    """spawn is the default start method on macOS and Windows: everything handed to a worker must
    pickle, and the shared tensors must stay shared."""
    args.lr, args.max_steps = 1e-3, 600
    shared_model, optimizer, steps, exitcodes = run_workers(args, 2, start_method="spawn")
    assert exitcodes == [0, 0]
    assert steps >= 600
    assert optimizer.state[next(shared_model.parameters())]["step"].item() >= 600 // args.num_steps
