"""The worker's loop of train.py on the fast path (--rollout fast, the default): the same A3C update,
computed without a graph per step and without a second forward pass.

Per update, as in train.py: sync with the shared model, play up to num_steps, bootstrap R, returns and
GAE and the two losses, backward, clip, hand the gradients over, step the shared optimizer. What
differs is how: acting keeps its activations (fast_rollout.Rollout), the loss terms get their graph
from them (fast_rollout.hidden_states), the losses are computed for all steps at once, and SharedAdam
steps in the fused kernel (fast_adam). tests/test_equivalence.py runs train.py both ways on the same
game and checks the same actions, losses and gradients."""

import ctypes
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from a3c_extras.fast_adam import fused_adam_step
from a3c_extras.fast_rollout import Rollout, hidden_states, sample_action


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
    """The game side of a worker: the current frame, the LSTM state carried between rollouts and the
    episode's length, stepped as train.py's loop steps it."""

    def __init__(self, env, state, rank: int, args, counter, link):
        self.env, self.rank, self.args, self.counter, self.link = env, rank, args, counter, link
        self.state = torch.from_numpy(state)
        self.done = True
        self.hx = self.cx = None
        self.episode_length = 0

    def start_rollout(self, hidden_size: int):
        """A new episode starts with a zero LSTM state; otherwise carry it on."""
        if self.done:
            self.hx, self.cx = torch.zeros(1, hidden_size), torch.zeros(1, hidden_size)

    def step(self, action: int) -> tuple[float, bool]:
        """Play one action; return the clipped reward and whether the episode ended (then reset)."""
        self.episode_length += 1
        state, reward, terminated, truncated, info = self.env.step(action)
        self.done = terminated or truncated or self.episode_length >= self.args.max_episode_length
        self.link.game_step(self.rank, self.counter, reward, self.done, info)
        if self.done:
            self.episode_length = 0
            state, _ = self.env.reset()
        self.state = torch.from_numpy(state)
        return max(min(reward, 1), -1), self.done


@dataclass
class Trajectory:
    """What a rollout played (the actions and clipped rewards) and what acting computed on the way."""

    rollout: Rollout  # the activations of each step, for the backward pass
    actions: list
    rewards: list
    done: bool
    R: float  # the bootstrap value V(s_T), 0 if the episode ended


def play_rollout(model, game: Game, num_steps: int) -> Trajectory:
    """Act for up to num_steps without autograd, keeping each step's activations."""
    game.start_rollout(model.lstm.hidden_size)
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


def loss_terms(model, traj: Trajectory):
    """V(s_t), log pi(a_t|s_t) and the entropy of each step, with their graph, from the hidden states
    acting computed (hidden_states gives them their backward pass through the trunk)."""
    hidden = hidden_states(traj.rollout, len(traj.actions))
    values, logits = model.critic_linear(hidden), model.actor_linear(hidden)
    log_prob_all = F.log_softmax(logits, dim=-1)
    entropies = -(log_prob_all * log_prob_all.exp()).sum(1)
    log_probs = log_prob_all.gather(1, torch.tensor(traj.actions).unsqueeze(1)).squeeze(1)
    return values[:, 0], log_probs, entropies


def a3c_loss(values, log_probs, entropies, rewards: list, R: float, args):
    """train.py's losses for all steps at once: the returns and GAE walked back from R in plain floats,
    then one tensor expression for each loss.

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
        gae = gae * args.gamma * args.gae_lambda + rewards[i] + args.gamma * v[i + 1] - v[i]
        gaes[i] = gae
    value_loss = 0.5 * (torch.tensor(returns) - values).pow(2).sum()
    policy_loss = -(log_probs * torch.tensor(gaes)).sum() - args.entropy_coef * entropies.sum()
    return policy_loss, value_loss


def work(rank, args, env, model, shared_model, counter, lock, optimizer, link, ensure_shared_grads):
    """train.py's loop, from after its set-up (seed, env, local model, optimizer) on."""
    torch.set_num_threads(1)  # one intra-op thread per worker: N workers share the cores, not N x cores
    threadpool_limits(1)  # the same for NumPy's BLAS, which runs the LSTM while acting
    keep_freed_memory()
    # The local copy stores its conv weights channels-last (NHWC): the same weights, in the layout
    # PyTorch's CPU convolutions run fastest in, for acting (1 frame) as for learning (a batch).
    model = model.to(memory_format=torch.channels_last)
    shared_adam = all("exp_avg" in optimizer.state[p] for group in optimizer.param_groups
                      for p in group["params"])  # SharedAdam: its state exists from the start
    state, _ = env.reset(seed=args.seed + rank)
    game = Game(env, state, rank, args, counter, link)
    while not link.stop_requested(counter, args):
        copy_weights(shared_model, model)  # 1. sync with the shared model
        traj = play_rollout(model, game, args.num_steps)  # 2. play (and 3. bootstrap R)
        with lock:
            counter.value += len(traj.actions)  # once per rollout: the same total, fewer lock round-trips
        values, log_probs, entropies = loss_terms(model, traj)
        policy_loss, value_loss = a3c_loss(values, log_probs, entropies, traj.rewards, traj.R, args)  # 4.
        loss = policy_loss + args.value_loss_coef * value_loss  # 5. backward, clip, hand over, step
        model.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        if not link.finite_update(rank, loss, grad_norm, args.max_nonfinite):
            continue
        ensure_shared_grads(model, shared_model)
        if shared_adam:
            fused_adam_step(optimizer)
        else:
            optimizer.step()


