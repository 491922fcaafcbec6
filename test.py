"""The test process of A3C: plays the shared model greedily, one episode at a time, and never updates
its weights. After each episode it prints the course's line and waits (60 s by default).

As a command it evaluates a saved agent (a3c_extras/evaluation.py):
    python test.py --checkpoint runs/<run>/best.pt --episodes 10 --noop-max 30 --record videos/
"""

import sys
import time
from collections import deque

import torch
import torch.nn.functional as F

from a3c_extras.supervision import WorkerLink
from a3c_extras.videos import EvaluationVideos
from envs import create_atari_env
from model import LSTM_SIZE, ActorCritic


def test(rank, args, shared_model, link=None):
    torch.manual_seed(args.seed + rank)
    torch.set_num_threads(1)
    link = link or WorkerLink("test")  # not in the course: stop, report, best.pt (a3c_extras/links.py)
    videos = EvaluationVideos(args)  # not in the course: MP4s of some episodes (a3c_extras/videos.py)

    if link.make_env is None:
        env = create_atari_env(args.env_name, render_mode=videos.render_mode, fire_reset=args.fire_reset)
    else:  # the tests' small game
        env = link.make_env(args)
    env.reset(seed=args.seed + rank)

    model = ActorCritic(env.observation_space.shape[0], env.action_space)

    model.eval()

    state, _ = env.reset()
    state = torch.from_numpy(state)
    reward_sum = 0
    done = True

    start_time = time.time()
    start_steps = link.total_steps()

    # An agent that repeats one action (one that never presses FIRE in Breakout) would never end its episode
    actions = deque(maxlen=100)
    episode_length = 0
    while not link.stop_requested():
        episode_length += 1
        # Sync with the shared model at the start of each episode: a copy, the shared weights are only read
        if done:
            model.load_state_dict(shared_model.state_dict())
            cx = torch.zeros(1, LSTM_SIZE)
            hx = torch.zeros(1, LSTM_SIZE)
            num_steps = link.total_steps()
            videos.start_episode(env)
        else:
            cx = cx.detach()
            hx = hx.detach()

        with torch.no_grad():
            value, logit, (hx, cx) = model((state.unsqueeze(0), (hx, cx)))
        prob = F.softmax(logit, dim=-1)
        action = prob.max(1, keepdim=True)[1].numpy()
        videos.add_frame(env, state, prob, value)

        state, reward, terminated, truncated, _ = env.step(action[0, 0])
        done = terminated or truncated or episode_length >= args.max_episode_length
        reward_sum += reward

        actions.append(action[0, 0])
        if actions.count(actions[0]) == actions.maxlen:
            done = True

        if done:
            fps = (link.total_steps() - start_steps) / (time.time() - start_time)
            print("Time {}, num steps {}, FPS {:.0f}, episode reward {}, episode length {}".format(
                time.strftime("%Hh %Mm %Ss", time.gmtime(time.time() - start_time)),
                link.total_steps(), fps, reward_sum, episode_length), flush=True)
            videos.end_episode(num_steps, reward_sum)
            link.evaluation(rank, num_steps, reward_sum, episode_length, model, args)
            reward_sum = 0
            episode_length = 0
            actions.clear()
            state, _ = env.reset()
            link.wait(args.eval_interval)

        state = torch.from_numpy(state)
    videos.end_episode(None, None)  # stopped mid-episode: no video of it


if __name__ == "__main__":
    from a3c_extras import evaluation

    sys.exit(evaluation.main(ActorCritic, create_atari_env))
