# Test Agent
"""The course's test.py: the test process plays the shared model greedily, one episode at a time, and
never updates its weights; after each episode it prints the course's line and waits (60 s by default).
Lines marked #+ are not the course's (docs/course.md says why).

As a command it evaluates a saved agent (a3c_extras/evaluation.py):
    python test.py --checkpoint runs/<run>/best.pt --episodes 10 --noop-max 30 --record videos/
"""

import torch
import torch.nn.functional as F
from envs import create_atari_env
from model import ActorCritic
import time
from collections import deque
import sys  #+
from a3c_extras import links, monitor, stall  #+ what the course did not have (a3c_extras/)


def test(rank, params, shared_model, link=None):  #+ link: the run's side (a3c_extras/links.py)
    params, link = links.connect(params, link, "test")  #+ defaults of what params lacks; stop, record
    torch.manual_seed(params.seed + rank)
    torch.set_num_threads(1)  #+ one thread: the cores are the workers'
    env = create_atari_env(params.env_name, video=True, link=link)  #+ link: where videos go, the departures
    env.reset(seed=params.seed + rank)  #+ env.seed(params.seed + rank): gymnasium seeds at reset
    model = ActorCritic(env.observation_space.shape[0], env.action_space, params.frame_size, params.lstm_size)  #+ --frame-size, --lstm-size
    model.eval()
    state, _ = env.reset()  #+ gymnasium: (observation, info)
    state = torch.from_numpy(state)
    reward_sum = 0
    done = True
    start_time = time.time()
    actions = deque(maxlen=100)
    guard = stall.StallGuard(env)  #+ the stuck-agent guard (a3c_extras/stall.py): the course's deque stays unused
    episode_length = 0
    while not link.stop_requested():  #+ while True: until the run stops
        episode_length += 1
        if done:
            model.load_state_dict(shared_model.state_dict())
            cx = torch.zeros(1, params.lstm_size)  #+ Variable(..., volatile=True): torch.no_grad() below
            hx = torch.zeros(1, params.lstm_size)  #+
            num_steps = link.total_steps()  #+ how far training was when these weights were loaded
        else:
            cx = cx.detach()  #+ Variable(cx.data, volatile=True)
            hx = hx.detach()  #+ Variable(hx.data, volatile=True)
        with torch.no_grad():  #+ volatile=True
            value, action_value, (hx, cx) = model((state.unsqueeze(0), (hx, cx)))  #+ Variable(state...)
        prob = F.softmax(action_value, dim=1)  #+ dim: no longer implied
        action = prob.max(1)[1].numpy()  #+ .data
        monitor.note(env, state, prob, value)  #+ for the video's overlay (--overlay)
        state, reward, done, truncated, _ = env.step(action[0])  #+ gymnasium: 5 values
        done = done or truncated or episode_length >= params.max_episode_length  #+ the course's comment, live
        reward_sum += reward
        cut_short = guard.check(action[0], reward, done)  #+ a game waiting for a FIRE that never comes
        done = done or cut_short  #+ ends, reported as cut short: not a finished game
        if done:
            print("Time {}, episode reward {}, episode length {}".format(time.strftime("%Hh %Mm %Ss", time.gmtime(time.time() - start_time)), reward_sum, episode_length)  # noqa: E501
                  + link.speed(start_time) + guard.note(cut_short), flush=True)  #+ the run's steps and FPS; cut short?
            link.evaluation(rank, num_steps, reward_sum, episode_length, model, params, cut_short)  #+ record, best.pt
            reward_sum = 0
            episode_length = 0
            actions.clear()
            state, _ = env.reset()  #+ gymnasium: (observation, info)
            link.wait(params.eval_interval)  #+ time.sleep(60): a flag, cut short when the run stops
        state = torch.from_numpy(state)
    env.close()  #+ an episode cut short by the end of the run leaves no video


if __name__ == "__main__":  #+ python test.py --checkpoint ...: the evaluation command
    from a3c_extras import evaluation  #+

    sys.exit(evaluation.main(ActorCritic, create_atari_env))  #+
