"""One A3C worker. Each update: sync the local model with the shared one, play up to num_steps, compute
the A3C loss, hand the local gradients to the shared model and step the shared optimizer (Hogwild: no
lock around the step)."""

import torch
import torch.nn.functional as F
import torch.optim as optim

from a3c_extras import fast_worker
from a3c_extras.supervision import WorkerLink
from envs import create_atari_env
from model import LSTM_SIZE, ActorCritic


def ensure_shared_grads(model, shared_model):
    for param, shared_param in zip(model.parameters(), shared_model.parameters()):
        # The course returned here once the shared .grad was set, counting on it to stay an alias of the
        # local one. Since PyTorch 2.0 zero_grad() sets .grad to None, and that early return then let the
        # local gradients sum up over updates: point the shared .grad at the current local one each time.
        shared_param._grad = param.grad


def train(rank, args, shared_model, optimizer=None, link=None):
    torch.manual_seed(args.seed + rank)
    torch.set_num_threads(1)  # N workers share the cores, not N x cores threads
    # not in the course: stop, count steps, report games (a3c_extras/links.py)
    link = link or WorkerLink(max_steps=args.max_steps, max_nonfinite=args.max_nonfinite)

    def make_env():  # not in the course: the opt-in departures; the tests' small game in place of Atari
        if link.make_env is not None:
            return link.make_env(args)
        return create_atari_env(args.env_name, life_loss=args.life_loss, fire_reset=args.fire_reset,
                                fast=args.rollout == "fast")

    env = make_env()

    model = ActorCritic(env.observation_space.shape[0], env.action_space)

    if optimizer is None:
        optimizer = optim.Adam(shared_model.parameters(), lr=args.lr)

    model.train()

    if args.rollout == "fast":  # the default: this loop's update, computed faster (a3c_extras/fast_worker.py),
        envs = [env] + [make_env() for _ in range(args.envs_per_worker - 1)]  # on K games at once
        return fast_worker.work(rank, args, envs, model, shared_model, optimizer, link, ensure_shared_grads)

    state, _ = env.reset(seed=args.seed + rank)
    state = torch.from_numpy(state)
    done = True

    episode_length = 0
    while not link.stop_requested():
        # 1. Sync with the shared model
        model.load_state_dict(shared_model.state_dict())
        if done:
            cx = torch.zeros(1, LSTM_SIZE)
            hx = torch.zeros(1, LSTM_SIZE)
        else:
            cx = cx.detach()
            hx = hx.detach()

        values = []
        log_probs = []
        rewards = []
        entropies = []

        # 2. Play up to num_steps, keeping V(s), log pi(a|s) and the entropy of each step
        for step in range(args.num_steps):  # noqa: B007 (the course's name)
            episode_length += 1
            value, logit, (hx, cx) = model((state.unsqueeze(0), (hx, cx)))
            prob = F.softmax(logit, dim=-1)
            log_prob = F.log_softmax(logit, dim=-1)
            entropy = -(log_prob * prob).sum(1, keepdim=True)
            entropies.append(entropy)

            action = prob.multinomial(num_samples=1).detach()
            log_prob = log_prob.gather(1, action)

            state, reward, terminated, truncated, info = env.step(action.item())
            done = terminated or truncated or episode_length >= args.max_episode_length
            link.game_step(rank, reward, done, info)  # the raw score, for progress.csv
            reward = max(min(reward, 1), -1)

            link.add_steps(1)

            if done:
                episode_length = 0
                state, _ = env.reset()

            state = torch.from_numpy(state)
            values.append(value)
            log_probs.append(log_prob)
            rewards.append(reward)

            if done:
                break

        # 3. Bootstrap from the critic's value of the last state, unless the episode ended
        R = torch.zeros(1, 1)
        if not done:
            value, _, _ = model((state.unsqueeze(0), (hx, cx)))
            R = value.detach()

        # 4. Walking back: returns and the value loss, GAE and the policy loss
        values.append(R)
        policy_loss = 0
        value_loss = 0
        gae = torch.zeros(1, 1)
        for i in reversed(range(len(rewards))):
            R = args.gamma * R + rewards[i]
            advantage = R - values[i]
            value_loss = value_loss + 0.5 * advantage.pow(2)

            # Generalized Advantage Estimation
            delta_t = rewards[i] + args.gamma * values[i + 1].detach() - values[i].detach()
            gae = gae * args.gamma * args.gae_lambda + delta_t

            policy_loss = policy_loss - log_probs[i] * gae - args.entropy_coef * entropies[i]

        # 5. Backward on the local model, clip, hand the gradients over, step the shared optimizer
        loss = policy_loss + args.value_loss_coef * value_loss
        model.zero_grad()  # the course's optimizer.zero_grad() would leave these summing up (PyTorch 2)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        if not link.update(rank, policy_loss, value_loss, sum(entropies), grad_norm):  # not in the course
            continue

        ensure_shared_grads(model, shared_model)
        optimizer.step()
