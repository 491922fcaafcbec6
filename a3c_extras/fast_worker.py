"""The worker's loop of train.py on the fast path (--rollout fast, the default): the same A3C update,
computed without a graph per step and without a second forward pass, on one game or on
--envs-per-worker K games at once.

Per update, as in train.py: sync with the shared model, play up to num_steps, bootstrap R, returns and
GAE and the two losses, backward, clip, hand the gradients over, step the shared optimizer. What
differs is how: acting keeps its activations (fast_rollout.Rollout), the loss terms get their graph
from them (fast_rollout.hidden_states), the losses are computed for all steps at once, and SharedAdam
steps in the fused kernel (fast_adam). With K games the worker acts on their K frames in one batch
and the update's loss is the mean of the K games' losses. tests/test_fast_path.py runs train.py both
ways on the same games and checks the same actions, losses and gradients."""

import ctypes
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from a3c_extras.fast_adam import fused_adam_step
from a3c_extras.fast_rollout import Rollout, hidden_states, sample_actions
from a3c_extras.schedule import set_learning_rate


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


def copy_weights(source, target) -> None:
    """target's parameters := source's, in place: load_state_dict without building and checking a dict."""
    with torch.no_grad():
        for param, source_param in zip(target.parameters(), source.parameters()):
            param.copy_(source_param)


class Game:
    """One game of a worker: the current frame, the LSTM state carried between rollouts and the episode's
    length, stepped as train.py's loop steps its game."""

    def __init__(self, env, state, rank: int, index: int, args, link):
        self.env, self.rank, self.index, self.args, self.link = env, rank, index, args, link
        self.state = torch.from_numpy(state)
        self.done = True
        self.hx = self.cx = None
        self.episode_length = 0

    def start_rollout(self, hidden_size: int):
        """A new episode starts with a zero LSTM state; otherwise carry it on."""
        if self.done:
            self.hx, self.cx = np.zeros(hidden_size, np.float32), np.zeros(hidden_size, np.float32)

    def step(self, action: int) -> tuple[float, bool]:
        """Play one action; return the clipped reward and whether the episode ended (then reset)."""
        self.episode_length += 1
        state, reward, terminated, truncated, info = self.env.step(action)
        self.done = terminated or truncated or self.episode_length >= self.args.max_episode_length
        self.link.game_step(self.rank, reward, self.done, info, game=self.index)
        if self.done:
            self.episode_length = 0
            state, _ = self.env.reset()
        self.state = torch.from_numpy(state)
        return max(min(reward, 1), -1), self.done


@dataclass
class Trajectory:
    """What a rollout of K games played and what acting computed on the way. Each game played up to
    num_steps steps, fewer if its episode ended: one course rollout per game."""

    rollout: Rollout  # the activations of each step, for the backward pass
    ticks: int  # steps of the longest of the K rollouts
    steps_of_game: list  # per game: the positions of its steps in the order played (the rows of loss_terms)
    actions: list  # the actions, in the order played
    rewards: list  # per game: its clipped rewards
    R: list  # per game: the bootstrap value V(s_T), 0 if its episode ended


def play_rollout(model, games: list[Game], num_steps: int) -> Trajectory:
    """Act for up to num_steps on every game at once, without autograd, keeping each step's activations."""
    for game in games:
        game.start_rollout(model.lstm.hidden_size)
    rollout = Rollout(model, num_steps, np.stack([g.hx for g in games]), np.stack([g.cx for g in games]))
    steps_of_game, actions, rewards = [[] for _ in games], [], [[] for _ in games]
    noise = torch.empty(len(games), model.actor_linear.out_features)
    playing = list(range(len(games)))
    while playing and rollout.ticks < num_steps:
        frames = torch.stack([games[k].state for k in playing])
        still_playing = []
        for k, action in zip(playing, sample_actions(rollout.act(frames, playing), noise)):  # a ~ pi(.|s)
            reward, done = games[k].step(action)
            steps_of_game[k].append(len(actions))
            actions.append(action)
            rewards[k].append(reward)
            if not done:
                still_playing.append(k)
        playing = still_playing
    ticks = rollout.ticks
    for k, game in enumerate(games):
        game.hx, game.cx = rollout.lstm_state(k, len(rewards[k]))  # the next rollout starts from here
    R = [0.0] * len(games)
    if playing:  # bootstrap from the critic's value of the last state: one more forward step
        rollout.act(torch.stack([games[k].state for k in playing]), playing)
        for k, value in zip(playing, rollout.values(playing)):
            R[k] = value
    return Trajectory(rollout, ticks, steps_of_game, actions, rewards, R)


def loss_terms(model, traj: Trajectory):
    """V(s_t), log pi(a_t|s_t) and the entropy of each step, in the order played, with their graph,
    from the hidden states acting computed (hidden_states gives them their backward pass through the
    trunk)."""
    hidden = hidden_states(traj.rollout, traj.ticks)
    values, logits = model.critic_linear(hidden), model.actor_linear(hidden)
    log_prob_all = F.log_softmax(logits, dim=-1)
    entropies = -(log_prob_all * log_prob_all.exp()).sum(1)
    log_probs = log_prob_all.gather(1, torch.tensor(traj.actions).unsqueeze(1)).squeeze(1)
    return values[:, 0], log_probs, entropies


def a3c_loss(values, log_probs, entropies, rewards: list, R: float, args):
    """train.py's losses for all steps of one game's rollout at once: the returns and GAE walked back
    from R in plain floats, then one tensor expression for each loss.

    value loss:  sum 0.5 * (R_t - V(s_t))^2 with R_t = r_t + gamma * R_{t+1}
    policy loss: -sum log pi(a_t|s_t) * GAE_t + entropy_coef * H(pi(.|s_t)),
                 GAE_t = delta_t + gamma * lambda * GAE_{t+1}, delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)
    """
    steps = len(rewards)
    v = values.detach().tolist() + [R]
    returns, gaes = [0.0] * steps, [0.0] * steps
    gae = 0.0
    for i in reversed(range(steps)):
        R = args.gamma * R + rewards[i]
        returns[i] = R
        gae = gae * args.gamma * args.tau + rewards[i] + args.gamma * v[i + 1] - v[i]
        gaes[i] = gae
    value_loss = 0.5 * (torch.tensor(returns) - values).pow(2).sum()
    policy_loss = -(log_probs * torch.tensor(gaes)).sum() - args.entropy_coef * entropies.sum()
    return policy_loss, value_loss


def batch_loss(model, traj: Trajectory, args):
    """The mean over the K games of train.py's loss, policy_loss + value_loss_coef * value_loss, each
    game's from its own rollout: with K = 1, the course's loss. Returned with the means of its parts
    (policy loss, value loss, summed entropy), detached, for the run's record."""
    values, log_probs, entropies = loss_terms(model, traj)
    loss, parts = 0, torch.zeros(3)
    for steps, rewards, R in zip(traj.steps_of_game, traj.rewards, traj.R):
        steps = torch.tensor(steps)
        policy_loss, value_loss = a3c_loss(values[steps], log_probs[steps], entropies[steps], rewards, R, args)
        loss = loss + policy_loss + args.value_loss_coef * value_loss
        parts += torch.stack([policy_loss.detach(), value_loss.detach(), entropies[steps].detach().sum()])
    return loss / len(traj.rewards), parts / len(traj.rewards)


def game_seed(args, rank: int, index: int) -> int:
    """Game `index` of worker `rank`: game 0 gets the course's seed + rank; the others seeds far from
    every worker's and the test process's (seed + num_processes), on one machine or on a cluster's."""
    return args.seed + rank + index * 1_000_000


def work(rank, args, envs, model, shared_model, optimizer, link, ensure_shared_grads):
    """train.py's loop, from after its set-up (seed, envs, local model, optimizer) on, on the K games
    of `envs`."""
    torch.set_num_threads(1)  # one intra-op thread per worker: N workers share the cores, not N x cores
    threadpool_limits(1)  # the same for NumPy's BLAS, which runs the LSTM while acting
    keep_freed_memory()
    # The local copy stores its conv weights channels-last (NHWC): the same weights, in the layout
    # PyTorch's CPU convolutions run fastest in, for acting (1 frame) as for learning (a batch).
    model = model.to(memory_format=torch.channels_last)
    shared_adam = all(
        "exp_avg" in optimizer.state[p] for group in optimizer.param_groups for p in group["params"]
    )  # SharedAdam: its state exists from the start
    for k, env in enumerate(envs):  # as train.py: seeded, then the first episode
        env.reset(seed=game_seed(args, rank, k))
    games = [Game(env, env.reset()[0], rank, k, args, link) for k, env in enumerate(envs)]
    while not link.stop_requested():
        copy_weights(shared_model, model)  # 1. sync with the shared model
        traj = loss = None  # the last update's activations go before this rollout's are made: one at a time
        traj = play_rollout(model, games, args.num_steps)  # 2. play (and 3. bootstrap R), every game
        link.frame_stats(rank, envs[0])  # worker 0's first game: its frame statistics, for checkpoints
        loss, (policy_loss, value_loss, entropy) = batch_loss(model, traj, args)  # 4. returns, GAE, losses
        model.zero_grad()  # 5. backward, clip, hand over, step
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        if not link.update(rank, policy_loss, value_loss, entropy, grad_norm):
            continue
        ensure_shared_grads(model, shared_model)
        set_learning_rate(optimizer, args, link.total_steps())
        if shared_adam:
            fused_adam_step(optimizer)
        else:
            optimizer.step()
