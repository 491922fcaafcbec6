# Training the AI
"""The course's train.py: one A3C worker. Each update: (1) sync the local model with the shared one,
(2) play up to num_steps, (3) bootstrap R from the critic unless the episode ended, (4) walk back for
the returns, the value loss, GAE and the policy loss, (5) backward, clip, hand the gradients to the
shared model and step the shared optimizer (Hogwild: no lock). Lines marked #+ are not the course's
(docs/course.md says why)."""

import torch
import torch.nn.functional as F
from envs import create_atari_env
from model import ActorCritic
import torch.optim as optim  #+ --no-shared: a plain Adam per worker
from a3c_extras import fast_worker, links, schedule  #+ what the course did not have (a3c_extras/)


def ensure_shared_grads(model, shared_model):
    for param, shared_param in zip(model.parameters(), shared_model.parameters()):
        # The course returned here once the shared .grad was set, counting on it to stay an alias of the
        # local one; since PyTorch 2.0 zero_grad() sets .grad to None, and that early return let the
        # local gradients sum up over updates: the shared .grad is pointed at the local one every time.
        shared_param._grad = param.grad


def train(rank, params, shared_model, optimizer, link=None):  #+ link: the run's side (a3c_extras/links.py)
    params, link = links.connect(params, link)  #+ defaults of what params lacks; stop, step count, record
    torch.manual_seed(params.seed + rank)
    torch.set_num_threads(1)  #+ N workers share the cores, not N x cores threads
    env = create_atari_env(params.env_name, link=link)  #+ link: the run's departures, the tests' game
    env.reset(seed=params.seed + rank)  #+ env.seed(params.seed + rank): gymnasium seeds at reset
    model = ActorCritic(env.observation_space.shape[0], env.action_space, params.frame_size, params.lstm_size)  #+ --frame-size, --lstm-size
    if optimizer is None:  #+ --no-shared: a plain Adam per worker, from the reference's later versions
        optimizer = optim.Adam(shared_model.parameters(), lr=params.lr)  #+
    if params.rollout == "fast":  #+ the default: this loop's update computed faster, on K games at once
        envs = [env] + [create_atari_env(params.env_name, link=link) for _ in range(params.envs_per_worker - 1)]  #+
        return fast_worker.work(rank, params, envs, model, shared_model, optimizer, link, ensure_shared_grads)  #+
    state, _ = env.reset()  #+ gymnasium: (observation, info)
    state = torch.from_numpy(state)
    done = True
    episode_length = 0
    while not link.stop_requested():  #+ while True: until the run stops
        # 1. Sync with the shared model
        model.load_state_dict(shared_model.state_dict())
        if done:
            cx = torch.zeros(1, params.lstm_size)  #+ Variable(...): tensors carry autograd since PyTorch 0.4
            hx = torch.zeros(1, params.lstm_size)  #+
        else:
            cx = cx.detach()  #+ Variable(cx.data)
            hx = hx.detach()  #+ Variable(hx.data)
        values = []
        log_probs = []
        rewards = []
        entropies = []
        # 2. Play up to num_steps, keeping V(s), log pi(a|s) and the entropy of each step
        for step in range(params.num_steps):  # noqa: B007 (the course's name)
            episode_length += 1  #+ moved here: the course counted rollouts, not steps
            value, action_values, (hx, cx) = model((state.unsqueeze(0), (hx, cx)))  #+ Variable(state...)
            prob = F.softmax(action_values, dim=1)  #+ dim: no longer implied
            log_prob = F.log_softmax(action_values, dim=1)  #+
            entropy = -(log_prob * prob).sum(1)
            entropies.append(entropy)
            action = prob.multinomial(num_samples=1).detach()  #+ multinomial().data
            log_prob = log_prob.gather(1, action)  #+ Variable(action)
            values.append(value)
            log_probs.append(log_prob)
            state, reward, done, truncated, info = env.step(action.item())  #+ gymnasium: 5 values
            done = (done or truncated or episode_length >= params.max_episode_length)  #+ truncated
            link.game_step(rank, reward, done, info)  #+ count the step; the raw score, for the record
            link.frame_stats(rank, env)  #+ worker 0: its frame statistics, for the checkpoints
            reward = max(min(reward, 1), -1)
            if done:
                episode_length = 0
                state, _ = env.reset()  #+ gymnasium: (observation, info)
            state = torch.from_numpy(state)
            rewards.append(reward)
            if done:
                break
        # 3. Bootstrap from the critic's value of the last state, unless the episode ended
        R = torch.zeros(1, 1)
        if not done:
            value, _, _ = model((state.unsqueeze(0), (hx, cx)))  #+ Variable(state...)
            R = value.detach()  #+ value.data
        values.append(R)  #+ Variable(R)
        policy_loss = 0
        value_loss = 0
        gae = torch.zeros(1, 1)
        # 4. Walking back: returns and the value loss, GAE and the policy loss
        for i in reversed(range(len(rewards))):
            R = params.gamma * R + rewards[i]
            advantage = R - values[i]
            value_loss = value_loss + 0.5 * advantage.pow(2)
            TD = rewards[i] + params.gamma * values[i + 1].detach() - values[i].detach()  #+ .data
            gae = gae * params.gamma * params.tau + TD
            policy_loss = policy_loss - log_probs[i] * gae - params.entropy_coef * entropies[i]  #+ 0.01: a flag
        # 5. Backward on the local model, clip, hand the gradients over, step the shared optimizer
        model.zero_grad()  #+ optimizer.zero_grad() would leave these summing up (PyTorch 2)
        (policy_loss + params.value_loss_coef * value_loss).backward()  #+ 0.5: a flag
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), params.max_grad_norm)  #+ 40: a flag
        if not link.update(rank, policy_loss, value_loss, sum(entropies), grad_norm):  #+ skip a non-finite one
            continue
        ensure_shared_grads(model, shared_model)
        schedule.set_learning_rate(optimizer, params, link.total_steps())  #+ --lr-decay-until: the paper's decay
        optimizer.step()
