"""A scripted game, and train.py's loop run on it with either rollout (classic: the course's code;
fast: the default), its shared optimizer replaced by one that records what the worker hands over."""

from collections import defaultdict

import gymnasium as gym
import numpy as np
import torch
from gymnasium.spaces import Box, Discrete

import a3c_extras.fast_worker
from a3c_extras.links import WorkerLink
from model import ActorCritic
from train import train

NUM_ACTIONS = 4


class ScriptedGame(gym.Env):
    """Random frames and a cycle of raw rewards (some outside [-1, 1]), whatever the actions; an
    episode lasts `length` steps (None: forever). With `echo`, the next frame depends on the action; with
    `repeat`, every episode replays the script from its start."""

    def __init__(
        self, length: int | None = None, echo: bool = False, repeat: bool = False, seed: int = 1, frame_size: int = 42
    ):
        self.observation_space = Box(-np.inf, np.inf, (1, frame_size, frame_size), dtype=np.float32)
        self.action_space = Discrete(NUM_ACTIONS)
        rng = np.random.default_rng(seed)
        self.frames = rng.normal(size=(16, 1, frame_size, frame_size)).astype(np.float32)
        self.rewards = [0.0, 0.0, 5.0, -3.0, 0.0, 1.0]
        self.length, self.echo, self.repeat = length, echo, repeat
        self.t, self.episode_t, self.actions = 0, 0, []

    def reset(self, *, seed=None, options=None):
        self.episode_t = 0
        if self.repeat:
            self.t = 0
        return self.frames[self.t % len(self.frames)].copy(), {}

    def step(self, action):
        self.actions.append(int(action))
        reward = self.rewards[self.t % len(self.rewards)]
        self.t += 1
        self.episode_t += 1
        frame = self.frames[self.t % len(self.frames)] + (0.5 * int(action) if self.echo else 0.0)
        done = self.length is not None and self.episode_t == self.length
        return frame.astype(np.float32), reward, done, False, {}


class RecordingOptimizer:
    """Stands in for the shared optimizer: keeps the gradient handed to the shared model at each update,
    changes no weight, and stops the worker after `updates`."""

    def __init__(self, shared_model, updates: int, link):
        self.named = list(shared_model.named_parameters())
        self.param_groups = [{"params": [p for _, p in self.named]}]
        self.state = defaultdict(dict)
        self.updates, self.link, self.grads = updates, link, []

    def zero_grad(self, set_to_none: bool = True):  # as torch.optim.Optimizer's, for the shared parameters
        for _, p in self.named:
            p.grad = None

    def step(self):
        self.grads.append({name: p.grad.clone() for name, p in self.named})
        if len(self.grads) >= self.updates:
            self.link.request_stop()


def shared_model(seed: int = 0, sharpen: float = 100.0, **sizes):
    """A model whose policy is far from uniform (so the policy terms matter) and whose critic is far from
    zero (so the bootstrap value matters), the same for each seed; `sizes`: ActorCritic's frame_size and
    lstm_size."""
    torch.manual_seed(seed)
    model = ActorCritic(1, Discrete(NUM_ACTIONS), **sizes)
    with torch.no_grad():
        model.actor_linear.weight.mul_(sharpen)
        model.critic_linear.weight.mul_(10)
        model.critic_linear.bias.fill_(0.5)
    return model


def force_actions(monkeypatch, actions):
    """Both rollouts' samplers (Tensor.multinomial in the classic loop, sample_actions in the fast one)
    return these actions in order."""
    forced = iter(actions)

    def multinomial(probs, num_samples):
        assert probs.shape == (1, NUM_ACTIONS) and abs(probs.sum().item() - 1) < 1e-5
        return torch.tensor([[next(forced)]])

    def sample_actions(logits, noise):
        return [next(forced) for _ in logits]

    monkeypatch.setattr(torch.Tensor, "multinomial", multinomial, raising=False)
    monkeypatch.setattr(a3c_extras.fast_worker, "sample_actions", sample_actions)


def run_train(
    args, rollout: str, game: ScriptedGame | list[ScriptedGame], updates: int, model=None, rank: int = 0, counts=None
):
    """train.py's worker of `rank` on the game (or on the games, one per --envs-per-worker) for `updates`
    updates, sharing a run's `counts` if given; returns the gradients handed over."""
    games = iter(game if isinstance(game, list) else [game])
    args.rollout, args.max_steps = rollout, 0
    model = model if model is not None else shared_model()
    link = WorkerLink(counts=counts, slot=rank if counts else 0, make_env=lambda _: next(games))
    optimizer = RecordingOptimizer(model, updates, link)
    train(rank, args, model, optimizer, link=link)
    return optimizer.grads
