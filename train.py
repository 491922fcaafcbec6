"""One A3C worker: play a few steps with a local copy of the shared model, compute the A3C loss,
hand the local gradients to the shared model and step the shared optimizer (Hogwild: no lock)."""

import ctypes
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torch.optim as optim
from threadpoolctl import threadpool_limits

from envs import create_atari_env
from model import ActorCritic, Rollout, replay


def keep_freed_memory() -> None:
    """On Linux (glibc): keep freed memory in the process for reuse instead of returning it to the OS.

    PyTorch's CPU tensors come from malloc, and glibc gives freed blocks of a few hundred kB back to
    the OS; an update allocates and frees a few MB, which then page-faults back in at the next one
    (about 500 faults per update, a third of the time of the backward pass through the convolutions).
    Memory stays flat: the same blocks are reused update after update."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc (macOS, Windows, musl): the allocator is left as it is
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt's parameter numbers, from glibc's malloc.h
    libc.mallopt(m_mmap_threshold, 64 << 20)  # blocks up to 64 MB come from the heap...
    libc.mallopt(m_trim_threshold, 256 << 20)  # ...which keeps up to 256 MB free for reuse


def ensure_shared_grads(model, shared_model):
    """Let the shared parameters' .grad point at this worker's local gradients (no copy).

    The course returned early once the shared .grad was set, relying on the same local tensor being
    reused. Pointing at the current local tensor on every update stays right whatever zero_grad does
    (since PyTorch 2.0 it sets grads to None, and the early return then kept summing old gradients)."""
    for param, shared_param in zip(model.parameters(), shared_model.parameters()):
        shared_param._grad = param.grad


def copy_weights(source, target):
    """target's parameters := source's, in place (the two models have the same architecture)."""
    with torch.no_grad():
        for param, source_param in zip(target.parameters(), source.parameters()):
            param.copy_(source_param)


class Game:
    """The environment side of a worker: the current frame, the LSTM state carried between rollouts,
    and the bookkeeping of the episode being played."""

    def __init__(self, env, seed: int, max_episode_length: int, on_game_end=None):
        self.env = env
        self.max_episode_length = max_episode_length
        self.on_game_end = on_game_end  # called with (raw return, length) when a game ends
        obs, _ = env.reset(seed=seed)
        self.state = torch.from_numpy(obs)
        self.done = True
        self.hx = self.cx = None
        self.episode_length = 0  # steps of the training episode (ends on life loss with --life-loss)
        self.game_return = 0.0  # raw, unclipped score of the whole game
        self.game_length = 0

    def start_rollout(self):
        """A new episode starts with a zero LSTM state; otherwise carry it on, cut from the old graph."""
        if self.done:
            self.hx, self.cx = torch.zeros(1, 256), torch.zeros(1, 256)
        else:
            self.hx, self.cx = self.hx.detach(), self.cx.detach()

    def step(self, action: int) -> tuple[float, bool]:
        """Play one action; return the clipped reward and whether the episode ended (then reset)."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.episode_length += 1
        self.game_length += 1
        self.game_return += reward
        too_long = self.episode_length >= self.max_episode_length
        self.done = terminated or truncated or too_long
        if self.done:
            self.episode_length = 0
            if info.get("game_over", True) or too_long:
                if self.on_game_end:
                    self.on_game_end(self.game_return, self.game_length)
                self.game_return, self.game_length = 0.0, 0
            obs, _ = self.env.reset()
        self.state = torch.from_numpy(obs)
        return max(min(reward, 1.0), -1.0), self.done  # reward clipping to [-1, 1]


@dataclass
class Trajectory:
    """What a rollout played (T actions and clipped rewards) and what acting computed on the way."""

    rollout: Rollout  # the activations of each step, for the backward pass
    actions: list
    rewards: list
    done: bool
    R: float  # the bootstrap value V(s_T), 0 if the episode ended


def sample_action(logits: np.ndarray, noise: torch.Tensor) -> int:
    """Draw a ~ pi(.|s) = softmax(logits) for one state, exactly as probs.multinomial(num_samples=1)
    in the classic loop: for one sample PyTorch's multinomial computes argmax(p / q), q ~ Exp(1)
    (the Gumbel-max trick). Written out it draws the same random numbers from torch's generator, so a
    seed plays the same actions in both loops. `noise` is a buffer for q, one entry per action;
    argmax ignores softmax's normalisation, which is skipped."""
    probs = np.exp(logits - logits.max())
    return int((probs / noise.exponential_().numpy()).argmax())


def play_rollout(model, game: Game, num_steps: int) -> Trajectory:
    """Act for up to num_steps, keeping each step's activations for the backward pass (see model.py):
    no autograd, and no second forward pass when learning."""
    game.start_rollout()
    rollout = Rollout(model, num_steps, game.hx, game.cx)
    actions, rewards, done = [], [], False
    noise = torch.empty(model.actor_linear.out_features)
    while len(actions) < num_steps and not done:
        action = sample_action(rollout.act(game.state), noise)  # a ~ pi(.|s)
        reward, done = game.step(action)
        actions.append(action)
        rewards.append(reward)
    game.hx, game.cx = rollout.lstm_state(len(actions))  # the next rollout starts from here
    R = 0.0
    if not done:  # bootstrap from the critic's value of the last state: one more forward step
        rollout.act(game.state)
        R = rollout.value()
    return Trajectory(rollout, actions, rewards, done, R)


def evaluate_trajectory(model, traj: Trajectory):
    """The loss terms of the rollout with their graph: V(s_t), log pi(a_t|s_t) and the entropy, from the
    hidden states acting computed (replay gives them their backward pass through the trunk)."""
    hidden = replay(traj.rollout, len(traj.actions))
    values, logits = model.critic_linear(hidden), model.actor_linear(hidden)
    log_prob_all = F.log_softmax(logits, dim=-1)
    entropies = -(log_prob_all * log_prob_all.exp()).sum(1)
    actions = torch.tensor(traj.actions).unsqueeze(1)
    log_probs = log_prob_all.gather(1, actions).squeeze(1)
    return values[:, 0], log_probs, entropies, traj.rewards, traj.R


def rollout_classic(model, game: Game, num_steps: int):
    """The course's rollout: one autograd forward per step, the graph kept for the whole rollout.
    Same losses and gradients as play_rollout + evaluate_trajectory; kept for comparison (--rollout classic)."""
    game.start_rollout()
    hx, cx = game.hx, game.cx
    values, log_probs, entropies, rewards = [], [], [], []
    done = False
    for _ in range(num_steps):
        value, logit, (hx, cx) = model((game.state.unsqueeze(0), (hx, cx)))
        prob = F.softmax(logit, dim=-1)
        log_prob = F.log_softmax(logit, dim=-1)
        entropies.append(-(log_prob * prob).sum(1))
        action = prob.multinomial(num_samples=1).detach()
        log_probs.append(log_prob.gather(1, action)[0])
        values.append(value[0])
        game.hx, game.cx = hx, cx
        reward, done = game.step(action.item())
        rewards.append(reward)
        if done:
            break
    R = 0.0
    if not done:  # bootstrap from the critic's value of the last state
        with torch.no_grad():
            R = model((game.state.unsqueeze(0), (hx, cx)))[0].item()
    return torch.cat(values), torch.cat(log_probs), torch.cat(entropies), rewards, R


def a3c_loss(values, log_probs, entropies, rewards, R, args):
    """The A3C loss of one rollout, walking back from the bootstrap value R.

    value loss:  sum 0.5 * (R_t - V(s_t))^2 with R_t = r_t + gamma * R_{t+1}
    policy loss: -sum log pi(a_t|s_t) * GAE_t + entropy_coef * H(pi(.|s_t)),
                 GAE_t = delta_t + gamma * lambda * GAE_{t+1}, delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)
    """
    steps = len(rewards)
    v = values.detach().tolist() + [R]  # V(s_T) = R for delta_T-1
    returns, gaes = [0.0] * steps, [0.0] * steps
    gae = 0.0
    for i in reversed(range(steps)):
        R = args.gamma * R + rewards[i]
        returns[i] = R
        delta_t = rewards[i] + args.gamma * v[i + 1] - v[i]
        gae = gae * args.gamma * args.gae_lambda + delta_t
        gaes[i] = gae
    advantages = torch.tensor(returns) - values
    value_loss = 0.5 * advantages.pow(2).sum()
    policy_loss = -(log_probs * torch.tensor(gaes)).sum() - args.entropy_coef * entropies.sum()
    return policy_loss, value_loss


def update_shared_model(model, shared_model, optimizer, policy_loss, value_loss, args) -> bool:
    """Backward on the local model, clip, hand the gradients over, step the shared optimizer.
    Returns False (and changes nothing shared) when the loss or the gradients are not finite."""
    loss = policy_loss + args.value_loss_coef * value_loss
    if not torch.isfinite(loss):
        return False
    model.zero_grad()  # the local grads: never let them sum over updates
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
    if not torch.isfinite(grad_norm):
        return False
    ensure_shared_grads(model, shared_model)
    optimizer.step()
    return True


def train(rank, args, shared_model, counter, lock, optimizer=None, *, make_env=None, stop_event=None,
          events=None):
    """Worker `rank`. `stop_event` ends it; `events` (a queue) receives its finished games and the
    count of skipped non-finite updates; `make_env(args)` replaces the Atari game (tests use it)."""
    torch.manual_seed(args.seed + rank)
    torch.set_num_threads(1)  # one intra-op thread per worker: N workers share the cores, not N x cores
    threadpool_limits(1)  # the same for NumPy's BLAS, which runs the LSTM while acting (model.Rollout)
    keep_freed_memory()

    if make_env is None:
        env = create_atari_env(args.env_name, life_loss=args.life_loss, fire_reset=args.fire_reset)
    else:
        env = make_env(args)
    model = ActorCritic(env.observation_space.shape[0], env.action_space.n)
    # The local copy stores its conv weights channels-last (NHWC): the same weights, in the layout
    # PyTorch's CPU convolutions run fastest in, for acting (1 frame) as for learning (a batch).
    model = model.to(memory_format=torch.channels_last)
    if optimizer is None:  # --no-shared: each worker keeps its own Adam statistics
        optimizer = optim.Adam(shared_model.parameters(), lr=args.lr)

    def report_game(game_return, game_length):
        if events is not None:
            events.put(("train", rank, counter.value, game_return, game_length))

    game = Game(env, args.seed + rank, args.max_episode_length, report_game)
    skipped = skipped_in_a_row = 0
    while not (stop_event is not None and stop_event.is_set()):
        if args.max_steps and counter.value >= args.max_steps:
            break
        # 1. Synchronise: start from the shared weights (a plain copy, tensor by tensor: the same as
        #    load_state_dict(shared_model.state_dict()) without building and checking a state dict).
        copy_weights(shared_model, model)

        # 2. Rollout of up to num_steps, then the loss terms with the graph.
        if args.rollout == "classic":
            values, log_probs, entropies, rewards, R = rollout_classic(model, game, args.num_steps)
        else:
            traj = play_rollout(model, game, args.num_steps)
            values, log_probs, entropies, rewards, R = evaluate_trajectory(model, traj)
        with lock:
            counter.value += len(rewards)

        # 3. Returns, advantages (GAE) and the two losses; 4. gradient step on the shared model.
        policy_loss, value_loss = a3c_loss(values, log_probs, entropies, rewards, R, args)
        if update_shared_model(model, shared_model, optimizer, policy_loss, value_loss, args):
            skipped_in_a_row = 0
            continue
        skipped += 1
        skipped_in_a_row += 1
        if events is not None:
            events.put(("nonfinite", rank, skipped))
        if skipped_in_a_row >= args.max_nonfinite:
            raise FloatingPointError(f"{skipped_in_a_row} updates in a row had a non-finite loss or gradient")
